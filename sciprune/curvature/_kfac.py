"""Kronecker-factored curvature (K-FAC) of a Linear/activation chain, and its spectral radius.

K-FAC (Martens & Grosse 2015) approximates the GGN block of layer ``z = W a + b`` with parameters
ordered as the rows of ``[W b]`` (out, in+1), flattened row-major, by ``G (x) A`` (``torch.kron(G, A)``):

    A = (1/N) sum_n abar_n abar_n^T,   abar = [a; 1]                    (in+1, in+1)
    G = (1/N) sum_n sum_c g_nc g_nc^T,  g_nc = J_z(x_n)^T S_c           (out, out)

with the output-Hessian square root ``S`` of the per-sample loss ``l_n`` (``_loss``: MSE
``l_n = (1/C)||y - t||^2``, so ``S_c = sqrt(2/C) e_c``; cross-entropy ``S_c = sqrt(p_c)(e_c - p)``):
``fisher="exact"``. Since the GGN block is ``(1/N) sum_n (sum_c g_nc g_nc^T) (x) (abar_n abar_n^T)``,
``G (x) A`` equals it exactly for one datum (any depth), and for a single Linear layer with MSE (g
does not depend on the sample). ``fisher="sampled"``: one ``g_n = J_z^T dl_n/dy`` per sample at a
target drawn from the model's predictive distribution (``_loss.sampled_out_grad``; ``E[g g^T]`` is the
exact G). A layer without bias has ``abar = a``. Masks are not applied: the factors describe the
dense layer (prune the rows/columns of an eigenvector yourself if needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import SciPruneError
from ._chain import LinearChain
from ._loss import check_loss, out_hessian_sqrt, prepare, sampled_out_grad, targets
from ._space import ParamSpace

__all__ = ["KFACFactor", "kfac_factors", "kfac_spectral_radius"]


@dataclass(frozen=True, eq=False)
class KFACFactor:
    """``A`` (in+1, in+1) input factor, ``G`` (out, out) output-gradient factor of one Linear layer."""

    A: torch.Tensor
    G: torch.Tensor
    weight: str
    bias: str | None

    def dense(self) -> torch.Tensor:
        """``kron(G, A)``: the approximate GGN block over ``[W b]`` flattened row-major."""
        return torch.kron(self.G, self.A)


def kfac_factors(model: nn.Module, data, *, loss: str, fisher: str = "exact", seed: int = 0,
                 names: Sequence[str] | str | None = None, batch_size: int | None = None) -> dict[str, KFACFactor]:
    """Layer (child) name -> :class:`KFACFactor` for the chain's Linear layers.

    Args:
        model: an ``nn.Sequential`` of ``nn.Linear`` and elementwise activations (e.g. ``sciprune.MLP``).
        loss: ``"mse"`` or ``"cross_entropy"``; fisher: ``"exact"`` (C cotangents per sample) or
            ``"sampled"`` (one, targets drawn with a numpy Generator seeded by ``seed``).
        names: layers or parameters (None: every Linear of the chain).
    """
    check_loss(loss)
    if fisher not in ("exact", "sampled"):
        raise SciPruneError(f"fisher must be 'exact' or 'sampled', got {fisher!r}")
    chain = LinearChain(model)
    layers = chain.layers_for(ParamSpace(model, names, masks=False).names) if names is not None else list(chain.layers)
    at = {chain.layers[c]: c for c in layers}
    stop = min(at)
    rng = np.random.default_rng(seed)
    A: dict[str, torch.Tensor] = {}
    G: dict[str, torch.Tensor] = {}
    N = 0
    for X, Y in prepare(model, data, batch_size):
        inputs, y = chain.forward(X)
        targets(loss, y, Y)
        B = X.shape[0]
        V = out_hessian_sqrt(loss, y).expand(B, -1, -1) if fisher == "exact" else sampled_out_grad(loss, y, rng)
        for t, g in chain.backward(inputs, y, V, stop):
            if t not in at:
                continue
            c = at[t]
            a = inputs[t]
            if chain.bias_of[c]:
                a = torch.cat([a, a.new_ones(B, 1)], dim=1)
            g = g.reshape(-1, g.shape[-1])
            A[c] = a.T @ a if c not in A else A[c] + a.T @ a
            G[c] = g.T @ g if c not in G else G[c] + g.T @ g
        N += B
    return {c: KFACFactor(A=A[c] / N, G=G[c] / N, weight=chain.weight_of[c], bias=chain.bias_of[c]) for c in layers}


def kfac_spectral_radius(factors: Mapping[str, KFACFactor]) -> tuple[float, str, torch.Tensor]:
    """``max_l lambda_max(A_l) lambda_max(G_l)``, the largest eigenvalue of the block-diagonal K-FAC.

    Returns ``(value, layer, u_G u_A^T)``: the eigenvector of ``kron(G, A)`` as an (out, in+1) matrix
    (unit Frobenius norm) over ``[W b]``. Both factors are positive semi-definite, so the largest
    eigenvalue of a Kronecker product is the product of the largest ones (HGNP's flatness measure).
    """
    if not factors:
        raise SciPruneError("factors must be a non-empty dict layer -> KFACFactor, got an empty one; use kfac_factors(...)")
    best = None
    for name, f in factors.items():
        la, ua = _top_eigenpair(f.A)
        lg, ug = _top_eigenpair(f.G)
        value = la * lg
        if best is None or value > best[0]:
            best = (value, name, torch.outer(ug, ua).to(device=f.G.device, dtype=f.G.dtype))
    return best


def _top_eigenpair(M: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Largest eigenvalue and its eigenvector of a symmetric factor, solved in float64 on the CPU.

    Factors of pruned or saturated layers can be singular with many repeated eigenvalues, on which
    float32 ``eigh`` may fail to converge; float64 of the symmetrised matrix does not.
    """
    S = M.detach().to(device="cpu", dtype=torch.float64)
    lam, vec = torch.linalg.eigh((S + S.T) / 2)
    return float(lam[-1]), vec[:, -1]
