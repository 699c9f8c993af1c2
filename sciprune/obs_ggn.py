"""The dense Gauss-Newton matrix of the training loss over every parameter of a chain's Linear layers.

For a network ``f(x; theta)`` with C outputs and the training loss ``L = (1/N) sum_n l_n(f(x_n))``
(:mod:`sciprune.losses`: MSE ``l_n = (1/C) ||y_n - t_n||^2``, cross-entropy ``-log softmax(y_n)_t``),
the generalised Gauss-Newton matrix is (Schraudolph 2002; Martens 2020, sec. 9)

    G = (1/N) sum_n J_n^T H_n J_n,   J_n = df(x_n)/dtheta,   H_n = d^2 l_n / dy^2 = sum_c S_nc S_nc^T

with ``S_nc = sqrt(2/C) e_c`` (MSE) or ``sqrt(p_c)(e_c - p)`` (cross-entropy, ``p = softmax(y_n)``;
:func:`sciprune.losses.out_hessian_sqrt`). The rows ``r_nc = J_n^T S_nc`` are formed per chunk of
samples by one backward walk of the C columns ``S_nc`` (:class:`sciprune.curvature.LinearChain`):
at a Linear ``z = W a + b`` with output cotangent ``g_nc`` the row holds ``g_nc a_n^T`` (weight) and
``g_nc`` (bias). Then ``G = (1/N) sum r r^T``, one matrix product per chunk, all in float64. This
is the curvature of whole-network Optimal Brain Surgeon (:mod:`sciprune.obs_network`).
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn

from . import losses
from .curvature import LinearChain
from .errors import SciPruneError
from .obs_rows import PIVOT_RTOL

__all__ = ["Layout", "network_layout", "network_ggn", "ggn_inverse"]

#: Float64 entries of the per-chunk Jacobian rows (samples x outputs x parameters): 32 MiB.
_CHUNK_ENTRIES = 1 << 22


class Layout(NamedTuple):
    """The flat coordinates of every parameter of the chain's Linear layers, layer by layer, each
    layer's weight (row-major) then its bias: ``names``, ``shapes``, ``offsets`` (name -> first
    coordinate), ``layer`` (name -> the weight name of its layer) and ``size`` (D)."""

    names: tuple[str, ...]
    shapes: dict[str, torch.Size]
    offsets: dict[str, int]
    layer: dict[str, str]
    size: int

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """name -> tensor  ->  the flat float64 vector (D,) in this layout."""
        return torch.cat([tensors[n].detach().reshape(-1).to(torch.float64) for n in self.names])

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """The flat vector (D,) -> name -> tensor of the parameter's shape (views)."""
        return {n: vec[self.offsets[n]:self.offsets[n] + self.shapes[n].numel()].view(self.shapes[n]) for n in self.names}


def network_layout(model: nn.Module) -> Layout:
    """The :class:`Layout` of ``model``'s Linear parameters (a one-line error for any other model)."""
    chain = LinearChain(model)
    params = dict(model.named_parameters())
    names, shapes, offsets, layer, at = [], {}, {}, {}, 0
    for c in chain.layers:
        for n in (chain.weight_of[c], chain.bias_of[c]):
            if n is None:
                continue
            names.append(n)
            shapes[n] = params[n].shape
            offsets[n] = at
            layer[n] = chain.weight_of[c]
            at += params[n].numel()
    return Layout(tuple(names), shapes, offsets, layer, at)


@torch.no_grad()
def network_ggn(model: nn.Module, batches, layout: Layout) -> tuple[torch.Tensor, int, str]:
    """``(G, N, loss)``: the (D, D) Gauss-Newton matrix (float64, on the model's device) of the training
    loss over the rows of ``batches`` (an iterable of ``(X, Y)``), their number N and the loss's name,
    chosen from the targets as in training (:func:`sciprune.losses.loss_for_targets`)."""
    model64 = copy.deepcopy(model).to(torch.float64)
    chain = LinearChain(model64)
    device = next(model64.parameters()).device
    D = layout.size
    G = torch.zeros(D, D, dtype=torch.float64, device=device)
    stop = min(chain.layers.values())
    spans = {t: (layout.offsets[chain.weight_of[c]], None if chain.bias_of[c] is None else layout.offsets[chain.bias_of[c]])
             for c, t in chain.layers.items()}
    N, loss = 0, None
    for X, Y in batches:
        loss = loss or losses.loss_for_targets(Y)
        X = X.to(device=device, dtype=torch.float64)
        C = chain.modules[max(chain.layers.values())].out_features
        step = max(1, _CHUNK_ENTRIES // (C * D))
        for s in range(0, X.shape[0], step):
            inputs, y = chain.forward(X[s:s + step])
            losses.targets(loss, y, Y[s:s + step].to(device))  # shapes and labels checked
            B = y.shape[0]
            rows = torch.empty(B, C, D, dtype=torch.float64, device=device)
            for t, g in chain.backward(inputs, y, losses.out_hessian_sqrt(loss, y), stop):
                g = g.expand(B, C, g.shape[-1])  # (B, C, out): J_z^T S_c per sample
                a = inputs[t]
                w0, b0 = spans[t]
                out, inn = g.shape[-1], a.shape[-1]
                rows[:, :, w0:w0 + out * inn].view(B, C, out, inn).copy_(g.unsqueeze(-1) * a[:, None, None, :])
                if b0 is not None:
                    rows[:, :, b0:b0 + out] = g
            flat = rows.view(B * C, D)
            G.addmm_(flat.T, flat)
            N += B
    if N == 0:
        raise SciPruneError("obs needs data: the data (or the examples drawn from it) hold no rows")
    return G.div_(N), N, loss


def ggn_inverse(H: torch.Tensor, damp: float, what: str, *, scale: float | None = None,
                why: str = "fewer samples times outputs than parameters, or parameters that act alike"
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, zero)``: ``P = (H + damp * scale * I)^-1`` by one Cholesky (``scale`` None: ``mean(diag H)``,
    OBC's relative dampening), and the coordinates with
    ``diag H == 0`` (no effect on the outputs: 1 is put on their diagonal, so they are decoupled).

    ``H`` is overwritten: the Cholesky factor and then ``P`` take its memory (LAPACK's potrf and potri
    work in place, on ``H``'s transpose, which is column-major), so no second D x D matrix is made. A pivot below ``PIVOT_RTOL`` times the
    largest diagonal entry (singular ``H``) is a one-line :class:`SciPruneError` naming ``what``, ``why``
    and ``damp``.
    """
    if damp > 0:
        H.diagonal().add_(damp * (float(H.diagonal().mean()) if scale is None else scale))
    zero = H.diagonal() == 0
    H.diagonal()[zero] = 1.0
    top = float(H.diagonal().max())
    info = torch.empty((), dtype=torch.int32, device=H.device)
    L = H.mT  # H is symmetric: its transpose is the same matrix in LAPACK's column-major order, so no copy
    torch.linalg.cholesky_ex(L, out=(L, info))
    pivots = L.diagonal() ** 2
    if int(info) != 0 or not bool(torch.isfinite(pivots).all()) or float(pivots.min()) <= PIVOT_RTOL * top:
        raise SciPruneError(
            f"{what} is singular ({why}); "
            f"pass damp > 0 (e.g. damp=1e-4) to add damp * mean(diag H) to its diagonal")
    torch.cholesky_inverse(L, out=L)
    return H, zero
