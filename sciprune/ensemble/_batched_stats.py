"""The batched passes behind :func:`sciprune.ensemble.score_ensemble`: a member axis on the stacked
parameters, the forward pass as one ``baddbmm`` per layer, the output cotangents of every
pre-activation by batched matmuls, and EC's sums ``S0, S1, S2`` and the loss gradients as ``torch.bmm``
per layer and chunk (see :mod:`sciprune.ensemble._prune` for the formulas)."""

from __future__ import annotations

import torch
from torch import nn

from .. import losses
from ..chain import Walker
from ..errors import SciPruneError


def _rows(X, shared: bool, s: slice, M: int) -> torch.Tensor:
    x = X[s] if shared else X[:, s]
    return x.expand(M, *x.shape) if shared else x


def _chunk_rows(M: int, widths: list[int], K: int, batch_size) -> int:
    """Rows per chunk: work tensors of about 2^22 elements (32 MB in float64), as in the EC pass."""
    per_row = M * max(K * max(widths), 2 * max(widths))
    rows = min(max((1 << 22) // max(per_row, 1), 256), 8192)
    return min(rows, int(batch_size)) if batch_size else rows


# The passes are :class:`sciprune.chain.Walker`'s over the stacked parameters: work tensors reused
# from chunk to chunk, the output cotangents of the K outputs folded into the rows ((M, K, B, n)
# viewed as (M, K*B, n)) so every product is one torch.bmm; sums over the rows are taken in the
# model's dtype per chunk and accumulated in float64.


def _linear_weights(chain: Walker, names: list[str]) -> dict[int, str]:
    """Index of each Linear whose weight is in ``names`` -> that name."""
    return {t: w for w, t in chain.linear_at.items() if w in names}


def _ec_moments(template, P: dict, names: list[str], X, xs: bool, M: int, N: int, batch_size, second: bool):
    """Centred sums per weight name (float64): ``(S0 (M, out), S1 (M, out, in), S2 or None, c (M, in))``.

    ``G[m, n, i] = sum_k (dy_k/dz_i)^2`` from the cotangents of the K output components (the identity).
    """
    chain = Walker(template, P)
    at = _linear_weights(chain, names)
    lowest = min(at)
    K = chain.weight(max(chain.layers.values())).shape[1]
    rows = _chunk_rows(M, [P[w].shape[i] for w in at.values() for i in (1, 2)], K, batch_size)
    acc, centre = {}, {}
    f64 = torch.float64
    work = chain.buffer
    with torch.no_grad():
        for start in range(0, N, rows):
            s = slice(start, min(N, start + rows))
            inputs, y = chain.forward(_rows(X, xs, s, M))
            if y.ndim != 3:
                raise SciPruneError(f"the model output must have shape (batch, outputs), got {tuple(y.shape[1:])}")
            B = y.shape[1]
            eye = torch.eye(K, dtype=y.dtype, device=y.device).view(1, K, 1, K)
            for t, g in chain.backward(inputs, y, eye, lowest):
                if t not in at:
                    continue
                G = torch.mul(g[:, 0], g[:, 0], out=work("G", g[:, 0].shape, g))  # sum_k g_k^2
                for k in range(1, K):
                    G.addcmul_(g[:, k], g[:, k])
                G = G.expand(M, *G.shape[1:])
                a = inputs[t]
                if t not in centre:
                    centre[t] = a.mean(1)
                    z = {"dtype": f64, "device": a.device}
                    acc[t] = [torch.zeros(M, G.shape[-1], **z), torch.zeros(M, G.shape[-1], a.shape[-1], **z),
                              torch.zeros(M, G.shape[-1], a.shape[-1], **z) if second else None]
                # a - c and (a - c)^2 in separate contiguous buffers (writing into slices of one copies)
                ac = torch.sub(a, centre[t].unsqueeze(1), out=work("c1", a.shape, a))
                ac2 = torch.mul(ac, ac, out=work("c2", a.shape, a)) if second else None
                for S, v in zip(acc[t][1:], (ac, ac2)):
                    if v is None:
                        continue
                    if G.shape[1] == 1:  # constant over the rows (the output layer): an outer product
                        S.add_(G[:, 0, :, None].to(f64) * v.sum(1)[:, None, :].to(f64))
                    else:
                        S.add_(torch.bmm(G.transpose(1, 2), v))
                acc[t][0].add_(B * G[:, 0].to(f64) if G.shape[1] == 1 else G.sum(1))
    return {at[t]: (S0, S1, S2, centre[t].to(f64)) for t, (S0, S1, S2) in acc.items()}


def _ec_shifts_and_scores(W: torch.Tensor, S0, S1, S2, c, N: int, kind: str):
    """EC importance and shift (``kind="ec"``), taylor-output importance, or the shift alone."""
    alive = (S0 > 0)[..., None]
    inv = torch.where(alive, 1.0 / torch.where(alive, S0[..., None], 1.0), 0.0)
    mean = S1 * inv
    shift = torch.where(alive, W * (mean + c[:, None, :]), 0.0)
    if kind == "shift":
        return None, shift
    if kind == "taylor-output":
        S2u = S2 + 2.0 * c[:, None, :] * S1 + c[:, None, :] ** 2 * S0[..., None]
        return W * W * S2u.clamp_min(0.0) / N, None
    var = (S2 * inv - mean * mean).clamp_min(0.0)
    return torch.where(alive, W * W * var * (S0[..., None] / N), 0.0), shift


def _gradient_scores(template, P: dict, names: list[str], X, xs, Y, ys, M: int, N: int, batch_size):
    """``|W * dL/dW|`` per member, ``L`` the mean training loss (MSE, or cross-entropy for labels).

    One explicit backward per chunk: ``dL/dy`` (``2 (y - Y)`` for the summed squared error,
    ``softmax(y) - onehot(Y)`` for the summed cross-entropy), propagated by the same batched pass as
    EC's cotangents (K = 1 cotangent, varying over the rows), and ``dL/dW = g^T a`` as one bmm per layer.
    """
    chain = Walker(template, P)
    at = _linear_weights(chain, names)
    lowest = min(at)
    rows = _chunk_rows(M, [max(p.shape[1:]) for p in P.values() if p.ndim == 3], 1, batch_size)
    total = {n: torch.zeros(P[n].shape, dtype=torch.float64, device=P[n].device) for n in names}
    count = 0
    with torch.no_grad():
        for start in range(0, N, rows):
            s = slice(start, min(N, start + rows))
            inputs, y = chain.forward(_rows(X, xs, s, M))
            Yb = _rows(Y, ys, s, M)
            name = losses.loss_for_targets(Yb)
            dy = losses.out_grad(name, y, losses.targets(name, y, Yb), "sum")  # d(sum of losses)/dy
            count += losses.count(name, y)
            for t, g in chain.backward(inputs, y, dy.unsqueeze(1), lowest):
                if t in at:
                    total[at[t]].add_(torch.bmm(g[:, 0].transpose(1, 2), inputs[t]))
    return {n: (P[n].to(torch.float64) * total[n] / count).abs() for n in names}
