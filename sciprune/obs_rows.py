"""The row kernel of exact layer-wise OBS: one inverse per layer, then greedy removals per row.

Frantar & Alistarh, "Optimal Brain Compression" (NeurIPS 2022), Sec. 3-4, code ``IST-DASLab/OBC``
``trueobs.py``. For one Linear layer with (augmented) inputs ``x`` (n, m), ``H = 2 x^T x / n`` is the
Hessian of ``E(w) = mean_n (x_n . (w - w0))^2``, the mean square change of one output row. With
``P = H^-1`` restricted to the row's live coordinates, removing weight ``j`` costs

    dE_j = w_j^2 / (2 P_jj),    and the optimal move of the rest is  w <- w - (w_j / P_jj) P[:, j]

(Hassibi & Stork 1993, eq. 4-5); ``P`` is then downdated by one Gaussian-elimination step,
``P <- P - P[:, j] P[j, :] / P_jj``, which is the inverse of ``H`` with row and column ``j`` deleted
(the inverse of a principal submatrix is the Schur complement of the inverse). Each step starts at the
optimum of ``E`` on the live coordinates, so the increases add up: the sum of the first k is the mean
square output change of the row after k removals, exactly the least-squares re-fit on what is left.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .errors import SciPruneError

__all__ = ["PIVOT_RTOL", "GreedyTrace", "inverse_hessian", "greedy_rows"]

#: H counts as singular when a Cholesky pivot is below PIVOT_RTOL times its largest diagonal entry: a
#: condition number of about 1e12 or more, where the float64 OBS updates would keep no correct digit.
PIVOT_RTOL = 1e-12


def inverse_hessian(H: torch.Tensor, damp: float, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(P, zero_in)``: ``P = (H + damp * mean(diag H) * I)^-1`` (float64, one Cholesky) and the inputs
    that are zero on all the data (``diag H == 0``: their weights cost nothing to remove).

    As OBC's ``prepare``: the damping is relative to the mean diagonal, and a zero-diagonal
    coordinate (whose row and column of ``H`` are zero) gets 1 on the diagonal, so it is decoupled.
    A singular ``H`` without enough damping is a one-line :class:`SciPruneError` naming ``what``.
    """
    H = H.detach().to(torch.float64).clone()
    m = H.shape[0]
    if damp > 0:
        H.diagonal().add_(damp * float(H.diagonal().mean()))
    zero_in = H.diagonal() == 0
    H[zero_in, zero_in] = 1.0
    L, info = torch.linalg.cholesky_ex(H)
    pivots = L.diagonal() ** 2
    if int(info) != 0 or not bool(torch.isfinite(L).all()) or float(pivots.min()) <= PIVOT_RTOL * float(H.diagonal().max()):
        raise SciPruneError(
            f"the input Hessian H = 2 X X^T / n of {what} is singular (linearly dependent inputs, e.g. duplicate "
            f"or constant features, or fewer samples than its {m} inputs); pass damp > 0 (e.g. damp=1e-4) to "
            f"add damp * mean(diag H) to its diagonal"
        )
    return torch.cholesky_inverse(L), zero_in


class GreedyTrace(NamedTuple):
    """What :func:`greedy_rows` records for r rows and up to s removals per row.

    ``losses[i, k]``: increase of the row's mean square output change at its (k+1)-th removal
    (``inf`` past its last candidate); ``order[i, k]``: the column removed then (-1 past it);
    ``weights``: each row after ``counts[i]`` removals (None when no counts were given).
    """

    losses: torch.Tensor
    order: torch.Tensor
    weights: torch.Tensor | None


@torch.no_grad()
def greedy_rows(W: torch.Tensor, P: torch.Tensor, candidate: torch.Tensor, zero_in: torch.Tensor, *, bias: bool,
                counts: torch.Tensor | None = None) -> GreedyTrace:
    """Greedy OBS removals of every row of ``W`` (r, m) at once, float64.

    Args:
        W: the rows, with the bias as last column when ``bias`` (never a candidate, but it moves).
        P: (m, m) the inverse Hessian of the layer (:func:`inverse_hessian`).
        candidate: (r, m) bool, the entries that may be removed (live weights); every other weight
            column is pruned already: it is eliminated from ``P`` first and stays zero.
        zero_in: (m,) bool, inputs that are zero on all the data (their removal costs 0).
        bias: whether the last column is the bias.
        counts: (r,) removals per row after which to return the row (None: only record the trace).
    """
    r, m = W.shape
    w = W.to(torch.float64).clone()
    avail = candidate.clone()
    Pr = P.to(torch.float64).unsqueeze(0).repeat(r, 1, 1)
    rows = torch.arange(r)
    gone = ~candidate
    if bias:
        gone[:, -1] = False
    for j in range(m):  # what is pruned already leaves P first (its weight is zero: w does not move)
        if bool(gone[:, j].any()):
            _eliminate(Pr, w, gone[:, j], torch.full((r,), j, dtype=torch.long), update_w=False)
    steps = int(candidate.sum(1).max()) if r else 0
    losses = torch.full((r, steps), float("inf"), dtype=torch.float64)
    order = torch.full((r, steps), -1, dtype=torch.long)
    out = w.clone() if counts is not None else None
    for k in range(steps):
        diag = Pr.diagonal(dim1=1, dim2=2)
        score = torch.where(avail, w * w / torch.where(avail, diag, 1.0), float("inf"))
        score = torch.where(avail & zero_in.unsqueeze(0), 0.0, score)
        j = score.argmin(1)  # ties: the first column
        active = avail.any(1)
        losses[:, k] = torch.where(active, score[rows, j] / 2, float("inf"))
        order[:, k] = torch.where(active, j, -1)
        _eliminate(Pr, w, active, j, update_w=True)
        avail[rows[active], j[active]] = False
        if out is not None:
            done = counts == k + 1
            out[done] = w[done]
    if bool(torch.isnan(losses).any()) or (out is not None and not bool(torch.isfinite(out).all())):
        raise SciPruneError("the OBS updates are not finite (H^-1 lost its positive diagonal in the downdates); "
                            "pass a larger damp")
    return GreedyTrace(losses, order, out)


def _eliminate(Pr: torch.Tensor, w: torch.Tensor, sel: torch.Tensor, j: torch.Tensor, *, update_w: bool) -> None:
    """Remove column ``j[i]`` of the rows ``sel``: the OBS move of ``w`` (``update_w``) and the
    Gaussian-elimination downdate of their ``P`` (row and column ``j`` then exactly zero)."""
    idx = torch.nonzero(sel).flatten()
    if idx.numel() == 0:
        return
    jj = j[idx]
    col = Pr[idx, :, jj]  # (q, m): P[:, j] of each selected row
    d = col[torch.arange(idx.numel()), jj]
    if update_w:
        w[idx] -= col * (w[idx, jj] / d).unsqueeze(1)
        w[idx, jj] = 0.0
    u = col / d.sqrt().unsqueeze(1)
    Pr[idx] -= u.unsqueeze(2) * u.unsqueeze(1)
    Pr[idx, jj, :] = 0.0
    Pr[idx, :, jj] = 0.0
