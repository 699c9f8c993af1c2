"""The removal kernel of whole-network OBS: greedy (block) eliminations from one inverse matrix.

Hassibi & Stork (1993), eq. 4-5, for a block ``Q`` of coordinates of ``theta`` in the quadratic model
``1/2 dtheta^T H dtheta`` with ``P = H^-1``: setting ``theta_Q = 0`` and moving the rest optimally is

    dtheta = -P[:, Q] P_QQ^-1 w_Q,   dL = 1/2 w_Q^T P_QQ^-1 w_Q,   P <- P - P[:, Q] P_QQ^-1 P[Q, :]

(the downdate is the inverse of ``H`` without ``Q``: the inverse of a principal submatrix is the Schur
complement of the inverse). ``P_QQ = L L^T`` by Cholesky, so the downdate is ``P -= U U^T`` with
``U = P[:, Q] L^-T``: one matrix product. Eliminated rows and columns are dropped from ``P`` in its own
memory once they are an eighth of it. Used by :mod:`sciprune.obs_network`.
"""

from __future__ import annotations

import torch

from .errors import SciPruneError

__all__ = ["Inverse", "compact_in_place", "surgery"]

#: ``P`` is compacted (eliminated rows and columns dropped) once this fraction of it is eliminated.
_COMPACT_FRACTION = 0.125


class Inverse:
    """``P`` on the coordinates ``act`` (global indices, increasing) still in the problem, with per
    coordinate ``alive`` (not yet eliminated), ``zero`` (diag H = 0) and ``pool`` (-1: a bias)."""

    def __init__(self, P: torch.Tensor, zero: torch.Tensor, act: torch.Tensor, pool: torch.Tensor) -> None:
        self.P, self.zero, self.act, self.pool = P, zero, act, pool
        self.alive = torch.ones(act.numel(), dtype=torch.bool, device=P.device)

    def eliminate(self, Q: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove the local coordinates ``Q`` jointly from weights ``w`` (local): ``(dw, shares)`` with
        ``dw = -P[:, Q] P_QQ^-1 w_Q`` and ``shares = 1/2 w_Q * (P_QQ^-1 w_Q)``; ``P`` downdated in place."""
        P = self.P
        C = P[:, Q]
        L, info = torch.linalg.cholesky_ex(C[Q])
        if int(info) != 0 or not bool(torch.isfinite(L.diagonal()).all()):
            raise SciPruneError("the downdated inverse Gauss-Newton matrix lost its positive definiteness (H is nearly "
                                "singular for float64); pass a larger damp (e.g. damp=1e-4)")
        s = torch.cholesky_solve(w[Q].unsqueeze(1), L).squeeze(1)
        U = torch.linalg.solve_triangular(L, C.T, upper=False).T  # C L^-T: P_Q. P_QQ^-1 P_.Q = U U^T
        P.addmm_(U, U.T, alpha=-1.0)
        P[Q, :] = 0.0
        P[:, Q] = 0.0
        self.alive[Q] = False
        shares = torch.where(self.zero[Q], 0.0, 0.5 * w[Q] * s)  # a decoupled coordinate costs nothing
        return -(C @ s), shares

    def compact(self) -> None:
        """Drop the eliminated rows and columns of ``P`` once they are ``_COMPACT_FRACTION`` of it."""
        m = self.alive.numel()
        if int((~self.alive).sum()) < max(1, _COMPACT_FRACTION * m):
            return
        keep = torch.nonzero(self.alive).flatten()
        self.P = compact_in_place(self.P, keep)
        self.zero, self.act, self.pool = self.zero[keep], self.act[keep], self.pool[keep]
        self.alive = torch.ones(keep.numel(), dtype=torch.bool, device=keep.device)


def compact_in_place(P: torch.Tensor, keep: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """``P[keep][:, keep]`` (``keep`` increasing) written over the front of ``P``'s own memory, a chunk
    of rows at a time: new row ``i`` lands at ``i * k``, before the old row ``keep[i] >= i`` it
    comes from and every old row after it, so nothing is overwritten before it is read, and no
    second matrix is allocated (a chunk of at most ``chunk`` entries is)."""
    k = keep.numel()
    flat = P.view(-1)
    step = max(1, chunk // max(k, 1))
    for s in range(0, k, step):
        rows = P[keep[s:s + step]][:, keep]  # read (a copy) before the write
        flat[s * k:(s + rows.shape[0]) * k] = rows.reshape(-1)
    return flat[:k * k].view(k, k)


def _choose(sal: torch.Tensor, cand: torch.Tensor, pool: torch.Tensor, quota: torch.Tensor, block: int) -> torch.Tensor:
    """The ``block`` smallest saliencies among ``cand`` with at most ``quota[p]`` from each pool ``p``
    (ties: the first position)."""
    order = torch.sort(sal, stable=True).indices
    order = order[cand[order]]
    p = pool[order]
    onehot = torch.nn.functional.one_hot(p, quota.numel())
    rank = (onehot.cumsum(0) * onehot).sum(1) - 1
    return order[rank < quota[p]][:block]


def surgery(inv: Inverse, theta: torch.Tensor, quota: torch.Tensor, block: int
             ) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """Greedy OBS removals until every pool has removed its ``quota``: ``theta`` (D,) moved in place;
    returns ``(removed (D,) bool, shares (D,), step losses)``."""
    removed = torch.zeros_like(theta, dtype=torch.bool)
    shares = torch.zeros_like(theta)
    steps: list[float] = []
    quota = quota.clone()
    while int(quota.sum()) > 0:
        w = theta[inv.act]
        cand = inv.alive & (inv.pool >= 0)
        cand &= quota[inv.pool.clamp(min=0)] > 0
        sal = torch.where(cand, w * w / (2 * inv.P.diagonal()), float("inf"))
        sal = torch.where(cand & inv.zero, 0.0, sal)
        Q = _choose(sal, cand, inv.pool.clamp(min=0), quota, block)
        if Q.numel() == 0:
            raise SciPruneError("no weight left to remove in a pool with removals to do; this is a bug, please report it")
        dw, share = inv.eliminate(Q, w)
        at = inv.act[Q]
        theta[inv.act] += dw
        theta[at] = 0.0
        removed[at] = True
        shares[at] = share
        steps.append(float(share.sum()))
        quota -= torch.bincount(inv.pool[Q], minlength=quota.numel())
        inv.compact()
    return removed, shares, steps
