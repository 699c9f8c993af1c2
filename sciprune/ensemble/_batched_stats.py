"""The batched passes behind :func:`sciprune.ensemble.score_ensemble`: a member axis on the stacked
parameters, the forward pass as one ``baddbmm`` per layer, the output cotangents of every
pre-activation by batched matmuls, and EC's sums ``S0, S1, S2`` and the loss gradients as ``torch.bmm``
per layer and chunk (see :mod:`sciprune.ensemble._prune` for the formulas)."""

from __future__ import annotations

import torch
from torch import nn

from .. import losses
from ..criteria.ec import activation_backward
from ..errors import SciPruneError


def _rows(X, shared: bool, s: slice, M: int) -> torch.Tensor:
    x = X[s] if shared else X[:, s]
    return x.expand(M, *x.shape) if shared else x


def _chunk_rows(M: int, widths: list[int], K: int, batch_size) -> int:
    """Rows per chunk: work tensors of about 2^22 elements (32 MB in float64), as in the EC pass."""
    per_row = M * max(K * max(widths), 2 * max(widths))
    rows = min(max((1 << 22) // max(per_row, 1), 256), 8192)
    return min(rows, int(batch_size)) if batch_size else rows


# --- the batched passes ----------------------------------------------------------------------------
# As in sciprune.criteria.ec.Chain, work tensors are reused from chunk to chunk (on a CPU a fresh
# temporary of a few MB costs page faults comparable to the op that fills it), the output
# cotangents of the K outputs are folded into the rows ((M, K, B, n) viewed as (M, K*B, n)) so every
# product is one torch.bmm, and sums over the rows are taken in the model's dtype per chunk and
# accumulated in float64.

class _Work:
    """Reusable buffers keyed by (purpose, shape, dtype, device)."""

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def __call__(self, key, shape, like: torch.Tensor) -> torch.Tensor:
        k = (key, tuple(shape), like.dtype, like.device)
        buf = self._bufs.get(k)
        if buf is None:
            if len(self._bufs) > 64:
                self._bufs.clear()
            buf = self._bufs[k] = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
        return buf


def _steps(template: nn.Sequential) -> list[tuple]:
    return [("linear", None, f"{n}.weight", f"{n}.bias" if m.bias is not None else None)
            if isinstance(m, nn.Linear) else ("act", m, None, None) for n, m in template.named_children()]


def _forward(steps, P: dict, x: torch.Tensor, work: _Work) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Inputs (M, B, n) of every step and the output (M, B, K) of the stacked chain (in buffers)."""
    inputs, h = [], x
    for t, (kind, m, w, b) in enumerate(steps):
        inputs.append(h)
        if kind == "linear":
            Wt = P[w].transpose(1, 2)
            out = work(("f", t), (h.shape[0], h.shape[1], Wt.shape[2]), h)
            h = torch.baddbmm(P[b].unsqueeze(1), h, Wt, out=out) if b is not None else torch.bmm(h, Wt, out=out)
        elif type(m) is nn.Tanh:
            h = torch.tanh(h, out=work(("f", t), h.shape, h))
        elif type(m) is nn.ReLU:
            h = torch.clamp_min(h, 0, out=work(("f", t), h.shape, h))
        else:
            h = m(h.clone()) if getattr(m, "inplace", False) else m(h)
    return inputs, h


def _act_backward(m, g: torch.Tensor, z: torch.Tensor, out: torch.Tensor, work: _Work, key) -> torch.Tensor:
    """``g * act'(z)`` for g (M, K, B or 1, n) and z, out (M, B, n)."""
    M, K, _, n = g.shape
    shape = (M, K, z.shape[1], n)
    return activation_backward(m, g, z.unsqueeze(1), out.unsqueeze(1), work(key, shape, z))


def _backward(steps, P: dict, inputs, y: torch.Tensor, g: torch.Tensor, lowest: int, work: _Work):
    """Yield ``(t, g)`` for the Linear steps from the last down to ``lowest``: ``g`` (M or 1, K, B or 1,
    out) is the cotangent of the step's output for the output cotangents ``g`` given (same layout).

    A cotangent constant over the rows (the identity, exact EC) stays of size 1 along them up to the
    first activation. The yielded tensor lives in a buffer that the next step may overwrite.
    """
    j = 0
    for t in range(len(steps) - 1, lowest - 1, -1):
        kind, m, w, _ = steps[t]
        if kind == "linear":
            yield t, g
            if t > lowest:
                j += 1
                W = P[w]
                M, K, B = W.shape[0], g.shape[1], g.shape[2]
                if B == 1:
                    g = torch.matmul(g, W.unsqueeze(1))  # (1 or M, K, 1, out) @ (M, 1, out, in): tiny
                else:
                    gf = g.expand(M, *g.shape[1:]).reshape(M, K * B, g.shape[3])
                    res = work(("m", j % 2), (M, K * B, W.shape[2]), g)
                    g = torch.bmm(gf, W, out=res).view(M, K, B, W.shape[2])
        else:
            out = inputs[t + 1] if t + 1 < len(inputs) else y
            g = _act_backward(m, g, inputs[t], out, work, ("b", t))


def _ec_moments(template, P: dict, names: list[str], X, xs: bool, M: int, N: int, batch_size, second: bool):
    """Centred sums per weight name (float64): ``(S0 (M, out), S1 (M, out, in), S2 or None, c (M, in))``.

    ``G[m, n, i] = sum_k (dy_k/dz_i)^2`` from the cotangents of the K output components (the identity).
    """
    steps = _steps(template)
    at = {i: w for i, (kind, _, w, _) in enumerate(steps) if kind == "linear" and w in names}
    lowest = min(at)
    last = [i for i, s in enumerate(steps) if s[0] == "linear"][-1]
    K = P[steps[last][2]].shape[1]
    rows = _chunk_rows(M, [P[w].shape[i] for w in at.values() for i in (1, 2)], K, batch_size)
    acc, centre = {}, {}
    f64 = torch.float64
    work = _Work()
    with torch.no_grad():
        for start in range(0, N, rows):
            s = slice(start, min(N, start + rows))
            inputs, y = _forward(steps, P, _rows(X, xs, s, M), work)
            if y.ndim != 3:
                raise SciPruneError(f"the model output must have shape (batch, outputs), got {tuple(y.shape[1:])}")
            B = y.shape[1]
            eye = torch.eye(K, dtype=y.dtype, device=y.device).view(1, K, 1, K)
            for t, g in _backward(steps, P, inputs, y, eye, lowest, work):
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
    steps = _steps(template)
    at = {i: w for i, (kind, _, w, _) in enumerate(steps) if kind == "linear" and w in names}
    lowest = min(at)
    rows = _chunk_rows(M, [max(p.shape[1:]) for p in P.values() if p.ndim == 3], 1, batch_size)
    total = {n: torch.zeros(P[n].shape, dtype=torch.float64, device=P[n].device) for n in names}
    count = 0
    work = _Work()
    with torch.no_grad():
        for start in range(0, N, rows):
            s = slice(start, min(N, start + rows))
            inputs, y = _forward(steps, P, _rows(X, xs, s, M), work)
            Yb = _rows(Y, ys, s, M)
            name = losses.loss_for_targets(Yb)
            dy = losses.out_grad(name, y, losses.targets(name, y, Yb), "sum")  # d(sum of losses)/dy
            count += losses.count(name, y)
            for t, g in _backward(steps, P, inputs, y, dy.unsqueeze(1), lowest, work):
                if t in at:
                    total[at[t]].add_(torch.bmm(g[:, 0].transpose(1, 2), inputs[t]))
    return {n: (P[n].to(torch.float64) * total[n] / count).abs() for n in names}
