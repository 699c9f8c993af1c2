"""HGNP's neuron score (Ebrahimi & Klabjan 2021, "Neuron-based Pruning of Deep Neural Networks with Better
Generalization using Kronecker Factored Curvature Approximation", arXiv 2111.08577, eq. 6):

    S_i = | dF/dm_i |  at m = 1,    F = L + mu * max(0, v^T H v - K)       (:mod:`sciprune.flatness`)

on ONE random mini-batch, with ``m_i`` a gate of value 1 after hidden neuron i's activation. Its
loss part is ``dL/dm_i = sum_n a_{n,i} dL/da_{n,i}``, the gate gradient Taylor-neuron squares;
its penalty part ``d(v^T H v)/dm_i`` (when ``v^T H v > K``) comes from autograd through the
Hessian-vector product (third derivatives). ``v`` is the K-FAC top direction of the same mini-batch.
``mu = 0``: the paper's second ablation (selection without the penalty), ``|dL/dm|``.

The mini-batch: ``batch_size`` rows of ``(X, Y)`` drawn at random (without replacement, with the seed),
or one of an iterable's batches drawn with the seed; without ``batch_size``, all rows. Random rows, not
the data's own consecutive batches: rows stored in a grid order (a PDE surrogate's) would otherwise give
a batch from one short time window. A removed neuron (row, bias, column masked) has
``a = 0`` where it enters the next layer (tanh(0) = relu(0) = 0) and scores 0.
"""

from __future__ import annotations

import torch

from .. import losses
from ..batches import Batches
from ..flatness import check_penalty_options, curvature_along, gated_forward, objective, top_direction
from ..neurons import hidden_layers
from ._registry import ScoreResult, register

__all__ = ["hgnp", "DEFAULT_MU", "DEFAULT_K", "one_batch"]

#: Defaults for a cross-entropy loss of order 0.1 and top curvature of order 10 (the digits network);
#: scale mu with the loss (a regression surrogate at MSE 1e-4 with curvature 50 wants mu near 1e-6).
DEFAULT_MU = 1e-3
DEFAULT_K = 0.0

OPTIONS = {
    "mu": f"float >= 0, default {DEFAULT_MU}: weight of the flatness penalty in F (0: the paper's selection ablation)",
    "K": f"float >= 0, default {DEFAULT_K}: the curvature v^T H v tolerated before the penalty acts",
    "fisher": "'exact' (default) or 'sampled': the K-FAC factors' output curvature",
    "batch_size": "rows of the one random mini-batch scored, drawn with the seed (default: all rows)",
}


def one_batch(data: Batches, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One random mini-batch: ``batch_size`` rows drawn without replacement with ``generator`` from
    resident data (all rows when ``batch_size`` is not below their number), or one of an iterable's
    batches drawn with it."""
    res = data.resident
    if res is not None:
        n = res[0].shape[0]
        if data.batch_size >= n:
            return res
        idx = torch.randperm(n, generator=generator)[: data.batch_size].to(res[0].device)
        return res[0][idx], res[1][idx]
    batches = list(data)
    return batches[int(torch.randint(len(batches), (1,), generator=generator))]


@register("hgnp", summary="|dF/dm| at m = 1 on one random mini-batch, F = L + mu max(0, v^T H v - K) with v the "
          "K-FAC top eigenvector (Ebrahimi & Klabjan 2021; neuron granularity)",
          needs_data=True, options=OPTIONS, granularity="neuron")
def hgnp(model, data: Batches, names, generator, /, *, mu=DEFAULT_MU, K=DEFAULT_K, fisher="exact") -> ScoreResult:
    mu, K, _, fisher = check_penalty_options(mu, K, 1, fisher)
    X, Y = one_batch(data, generator)
    loss = losses.loss_for_targets(Y)
    widths = {h.weight: h.size for h in hidden_layers(model)}
    p0 = next(model.parameters())
    gates = {n: torch.ones(widths[n], device=p0.device, dtype=p0.dtype, requires_grad=True) for n in names}
    with torch.enable_grad():
        if mu == 0:
            y = gated_forward(model, X, gates)
            F = losses.value(loss, y, losses.targets(loss, y, Y))
        else:
            with torch.no_grad():
                d = top_direction(model, X, Y, loss=loss, fisher=fisher)
            L, q = curvature_along(model, d, X, Y, loss=loss, gates=gates)
            F = objective(L, q, mu=mu, K=K)
        grads = torch.autograd.grad(F, [gates[n] for n in names])
    return ScoreResult({n: g.detach().abs().to(torch.float64) for n, g in zip(names, grads)})

