"""The exact diagonal of the generalised Gauss-Newton matrix of a Linear/activation chain, and the
loss gradient from the same walk.

For a Linear layer ``z = W a + b`` and the output-Hessian square root ``H_n = sum_c S_c S_c^T``
(``_loss``): ``G = (1/N) sum_n J_n^T H_n J_n`` has the diagonal
``diag_W[i, j] = (1/N) sum_n (sum_c g_nci^2) a_nj^2`` and ``diag_b[i] = (1/N) sum_n sum_c g_nci^2``
with ``g_nc = J_z(x_n)^T S_c`` (BackPACK's ``DiagGGNExact``, Dangel, Kunstner & Hennig 2020). For MSE
``S_c = sqrt(2/C) e_c``; for cross-entropy ``S_c = sqrt(p_c)(e_c - p)``, where the GGN is also the
Fisher. This is the curvature of Optimal Brain Damage (LeCun, Denker & Solla 1990).

The gradient of the summed loss is the same backward rule applied to one more cotangent, ``dl/dy``:
with ``g_n = J_z(x_n)^T dl_n/dy``, ``dL/dW = sum_n g_n a_n^T`` and ``dL/db = sum_n g_n`` (reverse mode).
:func:`walk_loss` sends the C columns of ``S`` and ``dl/dy`` backwards *together*, as one stack of
C + 1 cotangents, so the GGN diagonal and the gradient (Laurent et al. 2020's quadratic loss model) cost
one forward pass and one backward walk of C + 1 cotangents (C for the diagonal alone, 1 for the
gradient alone), plus one matrix product per layer for each. It works for one model or, on a stacked
:class:`sciprune.chain.Walker`, for M members at once (a leading member axis on every tensor).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import nn

from .. import losses as _losses
from ..chain import Factored, Walker
from ._chain import LinearChain
from ._loss import check_loss, out_hessian_sqrt, prepare, targets
from ._space import ParamSpace

__all__ = ["LossWalk", "ggn_diagonal", "loss_terms", "walk_loss"]

F64 = torch.float64


class LossWalk(NamedTuple):
    """Sums over the rows of one walk (float64), keyed by the index of each Linear in the chain.

    ``diag_w``/``diag_b``: ``sum_n sum_c g_nc^2 a_n^2`` and ``sum_n sum_c g_nc^2`` (``N diag(G)``);
    ``grad_w``/``grad_b``: the gradient of the summed loss ``sum_n l_n``; empty when not asked for.
    ``rows``: N (per member); ``count``: what the mean loss divides the summed one by (:func:`sciprune.losses.count`).
    Shapes: (out, in) / (out,), or (M, out, in) / (M, out) for a stack.
    """

    diag_w: dict[int, torch.Tensor]
    diag_b: dict[int, torch.Tensor]
    grad_w: dict[int, torch.Tensor]
    grad_b: dict[int, torch.Tensor]
    rows: int
    count: int


def _cotangents(loss: str, y: torch.Tensor, T: torch.Tensor, diag: bool, grad: bool) -> torch.Tensor:
    """The output cotangents ``(..., P, B or 1, C)``: the C columns ``S_c`` of the output Hessian's square
    root (``diag``), then ``dl/dy`` of the summed loss (``grad``); ``y`` is (B, C) or (M, B, C)."""
    lead, C = y.shape[:-2], y.shape[-1]
    parts = []
    if diag:
        S = out_hessian_sqrt(loss, y.reshape(-1, C))  # (B', C, C), row c = S_c (MSE: B' = 1)
        S = S.view(*((1,) * len(lead) if S.shape[0] == 1 else lead), -1, C, C)
        parts.append(S.movedim(-2, -3))  # (..., C, B or 1, C)
    if grad:
        parts.append(_losses.out_grad(loss, y, T, "sum").unsqueeze(-3))  # (..., 1, B, C)
    if len(parts) == 1:
        return parts[0]
    shape = torch.broadcast_shapes(parts[0].shape[:-3], parts[1].shape[:-3])
    return torch.cat([p.expand(*shape, p.shape[-3], y.shape[-2], C) for p in parts], dim=-3)


def _add(acc: dict[int, torch.Tensor], t: int, value: torch.Tensor) -> None:
    """Add a fresh per-chunk product (the model's dtype) to a float64 sum."""
    if t in acc:
        acc[t].add_(value)
    else:
        acc[t] = value.to(F64)


def _squares(walker: Walker, g: torch.Tensor, C: int) -> torch.Tensor:
    """``sum_c g[..., c, :, :]^2`` (one work buffer; no (C, B, out) temporary)."""
    g0 = g[..., 0, :, :]
    out = torch.mul(g0, g0, out=walker.buffer("ggn-g2", g0.shape, g0))
    for c in range(1, C):
        out.addcmul_(g[..., c, :, :], g[..., c, :, :])
    return out


@torch.no_grad()
def walk_loss(walker: Walker, chunks: Iterable[tuple[torch.Tensor, torch.Tensor]], loss: str, layers: Sequence[int],
              *, diag: bool, grad: bool, bias: bool = False) -> LossWalk:
    """One forward pass and one backward walk of C (``diag``) + 1 (``grad``) cotangents per chunk.

    Args:
        walker: the chain (one model, or a stacked walker for M members).
        chunks: ``(X, Y)`` pairs: X (B, in) or (M, B, in), Y the targets shaped for the outputs.
        loss: ``"mse"`` or ``"cross_entropy"`` (class probabilities accepted).
        layers: indices of the Linear layers (``walker.layers`` values) to sum over.
        bias: also sum the biases' terms.
    """
    stop = min(layers)
    want = set(layers)
    walk = LossWalk({}, {}, {}, {}, 0, 0)
    rows = count = 0
    for X, Y in chunks:
        inputs, y = walker.forward(X)
        T = targets(loss, y, Y)
        C, B = y.shape[-1], y.shape[-2]
        V = _cotangents(loss, y, T, diag, grad)
        for t, g in walker.backward_factored(inputs, y, V, stop):
            if isinstance(g, Factored):
                g = walker.complete(g)
            if t not in want:
                continue
            a = inputs[t]
            if diag:
                g2 = _squares(walker, g, C)  # (..., B or 1, out)
                if g2.shape[-2] == 1:  # constant over the rows (MSE at the output layer): an outer product
                    _add(walk.diag_w, t, g2.mT @ (a * a).sum(-2, keepdim=True))
                    if bias:
                        _add(walk.diag_b, t, B * g2[..., 0, :])
                else:
                    _add(walk.diag_w, t, g2.mT @ torch.mul(a, a, out=walker.buffer("ggn-a2", a.shape, a)))
                    if bias:
                        _add(walk.diag_b, t, g2.sum(-2))
            if grad:
                gd = g[..., -1, :, :]
                _add(walk.grad_w, t, gd.mT @ a)
                if bias:
                    _add(walk.grad_b, t, gd.sum(-2))
        rows += B
        count += _losses.count(loss, y)
    return walk._replace(rows=rows, count=count)


def loss_terms(model: nn.Module, data, *, loss: str, names: Sequence[str] | str | None = None,
               batch_size: int | None = None, diagonal: bool = True, gradient: bool = True
               ) -> tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
    """``(diag(G), dL/dtheta)`` as name -> float64 tensor from one walk (:func:`walk_loss`).

    ``diag(G)`` as :func:`ggn_diagonal` (pruned entries zero); the gradient of the mean loss ``L`` (the
    sum over the rows of ``dl_n/dtheta`` divided by :func:`sciprune.losses.count`), every entry, pruned
    ones included (as autograd gives it). Either is None when not asked for (``diagonal``, ``gradient``).
    """
    check_loss(loss)
    space = ParamSpace(model, names)
    chain = LinearChain(model)
    layers = chain.layers_for(space.names)
    idx = [chain.layers[c] for c in layers]
    bias = any(chain.bias_of[c] in space.names for c in layers)
    walk = walk_loss(chain, prepare(model, data, batch_size), loss, idx, diag=diagonal, grad=gradient, bias=bias)
    diag, grad = {}, {}
    for c, t in zip(layers, idx):
        for name, d, gr in ((chain.weight_of[c], walk.diag_w, walk.grad_w), (chain.bias_of[c], walk.diag_b, walk.grad_b)):
            if name in space.names:
                if diagonal:
                    diag[name] = d[t] / walk.rows
                if gradient:
                    grad[name] = gr[t] / walk.count
    return (space.project({n: diag[n] for n in space.names}) if diagonal else None,
            {n: grad[n] for n in space.names} if gradient else None)


def ggn_diagonal(model: nn.Module, data, *, loss: str, names: Sequence[str] | str | None = None,
                 batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Exact ``diag(G)`` as name -> tensor for the weights and biases of the chain's Linear layers.

    Cost: one forward pass and C cotangents backwards, one matrix product per layer per batch (sums
    over the batches in float64, returned in the model's dtype).

    Args:
        model: an ``nn.Sequential`` of ``nn.Linear`` and elementwise activations (e.g. ``sciprune.MLP``).
        data: ``(X, Y)``, a TaskData or a re-iterable of batches.
        loss: ``"mse"`` or ``"cross_entropy"``.
        names: parameters or layer prefixes (None: every trainable parameter, all of which must
            belong to the chain's Linear layers). Pruned entries are returned as zero.
    """
    dtype = next(model.parameters()).dtype
    diag = loss_terms(model, data, loss=loss, names=names, batch_size=batch_size, gradient=False)[0]
    return {n: d.to(dtype) for n, d in diag.items()}
