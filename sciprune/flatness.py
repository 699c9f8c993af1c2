"""HGNP's flatness-penalised objective (Ebrahimi & Klabjan 2021, arXiv 2111.08577, eq. 2):

    F(theta, m) = L(theta, m) + mu * max(0, v^T H v - K),

with ``L`` the mini-batch training loss (mean, :mod:`sciprune.losses`), ``H`` its Hessian with respect
to the parameters ``[W b]`` of one layer, and ``v`` the top eigenvector of the K-FAC approximation of
the loss curvature (the layer l* with the largest ``lambda_max(A_l) lambda_max(G_l)``, v = u_G u_A^T over
``[W_l* b_l*]``, unit norm; :func:`sciprune.curvature.kfac_spectral_radius`), held fixed within a step.
So ``v^T H v`` is the curvature of the true loss along the K-FAC direction, equal to the K-FAC radius
``rho`` where K-FAC is exact. Its gradient is a Hessian-vector product differentiated once more (double
backward; Sandler et al. 2021). ``m`` are neuron gates of value 1 after each hidden activation: the
HGNP score of neuron i is ``|dF/dm_i|`` (:mod:`sciprune.criteria.hgnp`).

:class:`FlatnessPenalty` is a :func:`sciprune.fit` hook: after each backward pass of ``L`` it adds the
gradient of ``mu * max(0, v^T H v - K)`` on the same mini-batch, so that the optimiser steps on ``F``.
``v`` (with the K-FAC factors, on the current mini-batch) is recomputed every ``refresh`` steps and
whenever the network's shapes change (compaction).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from . import losses
from .checks import check_choice, check_number, check_positive_int
from .curvature import kfac_factors, kfac_spectral_radius
from .errors import SciPruneError
from .neurons import hidden_layers

__all__ = ["Direction", "top_direction", "gated_forward", "curvature_along", "objective", "FlatnessPenalty",
           "check_penalty_options", "DEFAULT_REFRESH"]

#: Steps between refreshes of the K-FAC factors and v in training (1: every step, the paper's reading).
DEFAULT_REFRESH = 1


@dataclass(frozen=True)
class Direction:
    """The K-FAC top direction: ``layer`` (child name of the Linear layer l*), ``rho`` (its K-FAC radius
    lambda_max(A) lambda_max(G)), ``weight`` and ``bias`` (v over W_l* and b_l*, unit norm together)."""

    layer: str
    rho: float
    weight: torch.Tensor
    bias: torch.Tensor | None


def top_direction(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, *, loss: str, fisher: str = "exact") -> Direction:
    """The K-FAC factors of ``loss`` on ``(X, Y)`` (:func:`sciprune.curvature.kfac_factors`) and their top
    eigenvector, split into the weight and bias parts of the layer it lives on."""
    factors = kfac_factors(model, (X, Y), loss=loss, fisher=fisher)
    rho, layer, vec = kfac_spectral_radius(factors)
    lin = getattr(model, layer)
    vec = vec.to(device=lin.weight.device, dtype=lin.weight.dtype)
    if lin.bias is None:
        return Direction(layer, float(rho), vec, None)
    return Direction(layer, float(rho), vec[:, :-1].contiguous(), vec[:, -1].contiguous())


def gated_forward(model: nn.Module, X: torch.Tensor, gates: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """The output of the chain ``model`` with the activations of hidden layer l multiplied by
    ``gates[W_l name]`` (a vector of its width) where they enter W_{l+1}; ``None``: the plain forward."""
    if not gates:
        return model(X)
    into = {h.next_weight.rsplit(".", 1)[0]: gates[h.weight] for h in hidden_layers(model) if h.weight in gates}
    x = X
    for name, child in model.named_children():
        if name in into:
            x = x * into[name]
        x = child(x)
    return x


def curvature_along(model: nn.Module, d: Direction, X: torch.Tensor, Y: torch.Tensor, *, loss: str,
                    gates: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L, v^T H v)`` on ``(X, Y)``, both differentiable (graphs kept) with respect to every parameter
    and the ``gates``: ``g = dL/dtheta_l*`` by autograd with a graph, then ``H v = d(g . v)/dtheta_l*``."""
    lin = getattr(model, d.layer)
    params = [lin.weight] + ([lin.bias] if d.bias is not None else [])
    vs = [d.weight] + ([d.bias] if d.bias is not None else [])
    y = gated_forward(model, X, gates)
    L = losses.value(loss, y, losses.targets(loss, y, Y))
    g = torch.autograd.grad(L, params, create_graph=True)
    gv = sum((gi * vi).sum() for gi, vi in zip(g, vs))
    hv = torch.autograd.grad(gv, params, create_graph=True)
    return L, sum((hi * vi).sum() for hi, vi in zip(hv, vs))


def objective(L: torch.Tensor, q: torch.Tensor, *, mu: float, K: float) -> torch.Tensor:
    """``F = L + mu * max(0, q - K)``."""
    return L + mu * torch.clamp(q - K, min=0)


def check_penalty_options(mu, K, refresh=DEFAULT_REFRESH, fisher="exact", *, where: str = "") -> tuple[float, float, int, str]:
    """``(mu, K, refresh, fisher)`` checked: mu >= 0, K a finite number, refresh an int >= 1."""
    pre = f"{where}." if where else ""
    mu = check_number(mu, f"{pre}mu", meaning=" (the weight of the flatness penalty)")
    K = check_number(K, f"{pre}K", meaning=" (the curvature v^T H v tolerated before the penalty acts)")
    return mu, K, check_positive_int(refresh, f"{pre}refresh"), check_choice(fisher, ("exact", "sampled"), f"{pre}fisher")


@dataclass
class FlatnessPenalty:
    """A :func:`sciprune.fit` hook adding the gradient of ``mu * max(0, v^T H v - K)`` to each step's.

    ``refresh``: steps between recomputations of v (K-FAC factors of the current mini-batch and their
    top eigenvector; default 1). Records ``rho`` (the K-FAC radius at each refresh), ``active`` (steps
    where ``v^T H v > K``, whose penalty gradient was added), ``steps`` and ``seconds`` (time spent in
    the hook). ``mu = 0`` is plain training on L (the paper's first ablation) and costs nothing.
    """

    mu: float
    K: float
    refresh: int = DEFAULT_REFRESH
    fisher: str = "exact"
    rho: list[float] = field(default_factory=list)
    active: int = 0
    steps: int = 0
    seconds: float = 0.0

    def __post_init__(self) -> None:
        self.mu, self.K, self.refresh, self.fisher = check_penalty_options(self.mu, self.K, self.refresh, self.fisher)
        self._direction: Direction | None = None
        self._key = None
        self._age = 0

    def after_backward(self, state) -> None:
        if self.mu == 0:
            return
        if state.batch is None:
            raise SciPruneError("FlatnessPenalty needs the mini-batch of each step: use it with sciprune.fit, "
                                "not with the ensemble engine")
        t0 = time.perf_counter()
        model, (X, Y) = state.model, state.batch
        loss = losses.loss_for_targets(Y)
        key = (id(model), tuple(p.shape for p in model.parameters()))
        if self._direction is None or key != self._key or self._age >= self.refresh:
            with torch.no_grad():
                self._direction = top_direction(model, X.detach(), Y, loss=loss, fisher=self.fisher)
            self._key, self._age = key, 0
            self.rho.append(self._direction.rho)
        self._age += 1
        self.steps += 1
        L, q = curvature_along(model, self._direction, X, Y, loss=loss)
        if float(q.detach()) > self.K:
            params = [p for p in model.parameters() if p.requires_grad]
            grads = torch.autograd.grad(self.mu * (q - self.K), params, allow_unused=True)
            for p, g in zip(params, grads):
                if g is not None:
                    p.grad = g if p.grad is None else p.grad.add_(g)
            self.active += 1
        self.seconds += time.perf_counter() - t0
