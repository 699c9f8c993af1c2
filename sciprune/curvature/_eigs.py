"""Extreme eigenpairs of the Hessian or GGN by Lanczos, and the deflated power iteration peer.

``top_eigenpairs``: implicitly restarted Lanczos (ARPACK through ``scipy.sparse.linalg.eigsh``) on a
:class:`CurvatureOperator`; ARPACK stops when every Ritz pair has ``||M u - lambda u|| <= tol |lambda|``.
``power_iteration_eigs``: the method of PyHessian (Yao et al. 2020) and pytorch-hessian-eigenthings
(Golmant et al. 2018) with Hotelling deflation: for eigenvalue i iterate ``v <- (M - sum_{j<i}
lambda_j u_j u_j^T) v / ||.||`` until the Rayleigh quotient changes by less than ``tol`` relatively.
It finds the eigenvalues of largest magnitude. Both start from vectors of a seeded numpy Generator.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import nn

from ..errors import SciPruneError
from ._operators import CurvatureOperator
from ._space import ParamSpace

__all__ = ["EigResult", "power_iteration_eigs", "top_eigenpairs"]


@dataclass(frozen=True, eq=False)
class EigResult:
    """Eigenpairs on a :class:`ParamSpace`.

    ``values`` (k,) sorted descending (by magnitude for ``which="LM"`` and power iteration);
    ``vectors`` (k, dim) unit eigenvectors over the space's kept coordinates (``vector(i)`` gives
    name -> tensor); ``residuals`` (k,) ``||M u - lambda u|| / |lambda|``, checked with k extra products
    that ``n_products`` does not count; ``n_products`` the matrix-vector products the solver used;
    ``wall_s`` its wall time; ``converged`` (k,) whether each pair met ``tol`` within ``max_iter``.
    """

    values: np.ndarray
    vectors: torch.Tensor
    residuals: np.ndarray
    n_products: int
    wall_s: float
    space: ParamSpace
    method: str
    converged: tuple[bool, ...]

    def vector(self, i: int) -> dict[str, torch.Tensor]:
        """Eigenvector ``i`` as name -> tensor shaped like the parameter (zero at pruned entries)."""
        return self.space.unflatten(self.vectors[i])


def _operator(model, data, loss, matrix, names, batch_size) -> CurvatureOperator:
    return CurvatureOperator(model, data, loss=loss, matrix=matrix, names=names, batch_size=batch_size)


def _check_k(k: int, dim: int, *, strict: bool) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise SciPruneError(f"k must be a positive integer, got {k!r}")
    limit = dim - 1 if strict else dim
    if k > limit:
        raise SciPruneError(
            f"k must be at most {limit} for a space of {dim} coordinates, got {k}; "
            "use a smaller k, more parameters (names=), or a dense eigendecomposition for so small a space"
        )
    return int(k)


def _residuals(op: CurvatureOperator, values: np.ndarray, U: torch.Tensor) -> np.ndarray:
    saved = op.n_products
    MU = op.torch_matmat(U)
    op.n_products = saved
    lam = torch.as_tensor(values, dtype=U.dtype, device=U.device)
    r = torch.linalg.vector_norm(MU - lam[:, None] * U, dim=1) / lam.abs().clamp_min(torch.finfo(U.dtype).tiny)
    return r.cpu().numpy().astype(np.float64)


def top_eigenpairs(model: nn.Module, data, *, k: int = 5, loss: str, matrix: str = "hessian",
                   names: Sequence[str] | str | None = None, which: str = "LA", tol: float = 1e-3,
                   seed: int = 0, max_iter: int | None = None, ncv: int | None = None,
                   batch_size: int | None = None) -> EigResult:
    """The ``k`` largest (``which="LA"``, algebraic) or largest-magnitude (``"LM"``) eigenpairs by Lanczos.

    Args:
        data: ``(X, Y)``, a TaskData or a re-iterable of batches.
        loss: ``"mse"`` or ``"cross_entropy"``; matrix: ``"hessian"`` or ``"ggn"``.
        names: parameters or module prefixes spanning the space (None: all trainable); masks respected.
        tol: relative accuracy of the eigenvalues (ARPACK's ``tol``; 0 means machine precision).
        seed: seeds the numpy Generator that draws the Gaussian start vector.
        max_iter: ARPACK restarts (default ``10 * dim``).
        ncv: Lanczos basis size, default ``max(2k + 1, k + 10)`` (at most ``dim``). ARPACK makes ``ncv``
            products before its first convergence test; scipy's default ``max(2k + 1, 20)`` costs 21
            products for a top-1 that a basis of 11 finds in 12 on the trained 2-40x6-1 network
            (``benchmarks/bench_hessian_eigs.py``), and no more restarts were needed for k = 5.
    """
    if which not in ("LA", "LM"):
        raise SciPruneError(f"which must be 'LA' (largest algebraic) or 'LM' (largest magnitude), got {which!r}")
    if not tol >= 0:
        raise SciPruneError(f"tol must be a non-negative number, got {tol!r}")
    op = _operator(model, data, loss, matrix, names, batch_size)
    k = _check_k(k, op.space.dim, strict=True)
    if ncv is None:
        ncv = min(op.space.dim, max(2 * k + 1, k + 10))
    elif not (isinstance(ncv, (int, np.integer)) and k < ncv <= op.space.dim):
        raise SciPruneError(f"ncv must be an integer with k < ncv <= {op.space.dim}, got {ncv!r}")
    v0 = np.random.default_rng(seed).standard_normal(op.space.dim)
    t0 = time.perf_counter()
    try:
        vals, vecs = eigsh(op, k=k, which=which, tol=tol, v0=v0, maxiter=max_iter, ncv=ncv)
    except ArpackNoConvergence as e:
        raise SciPruneError(
            f"Lanczos did not converge to tol={tol} within max_iter={max_iter} restarts "
            f"({len(e.eigenvalues)} of {k} pairs converged); raise max_iter or tol, or lower k"
        ) from None
    wall = time.perf_counter() - t0
    order = np.argsort(-(np.abs(vals) if which == "LM" else vals), kind="stable")
    vals, vecs = vals[order], vecs[:, order]
    U = torch.from_numpy(np.ascontiguousarray(vecs.T)).to(device=op.space.device, dtype=op.space.dtype)
    n = op.n_products
    return EigResult(values=vals.astype(np.float64), vectors=U, residuals=_residuals(op, vals, U), n_products=n,
                     wall_s=wall, space=op.space, method=f"lanczos-{which}", converged=(True,) * k)


def power_iteration_eigs(model: nn.Module, data, *, k: int = 5, loss: str, matrix: str = "hessian",
                         names: Sequence[str] | str | None = None, tol: float = 1e-3, seed: int = 0,
                         max_iter: int = 1000, batch_size: int | None = None) -> EigResult:
    """The ``k`` largest-magnitude eigenpairs by deflated power iteration (the PyHessian method).

    Eigenvalue ``i`` stops when ``|lambda_new - lambda_old| <= tol |lambda_old|`` or after ``max_iter``
    products (then ``converged[i]`` is False). Arguments as in :func:`top_eigenpairs`.
    """
    if not tol >= 0:
        raise SciPruneError(f"tol must be a non-negative number, got {tol!r}")
    if not (isinstance(max_iter, (int, np.integer)) and max_iter >= 1):
        raise SciPruneError(f"max_iter must be a positive integer, got {max_iter!r}")
    op = _operator(model, data, loss, matrix, names, batch_size)
    k = _check_k(k, op.space.dim, strict=False)
    rng = np.random.default_rng(seed)
    dev, dt = op.space.device, op.space.dtype
    vals: list[float] = []
    vecs: list[torch.Tensor] = []
    conv: list[bool] = []
    t0 = time.perf_counter()
    for _ in range(k):
        v = torch.from_numpy(rng.standard_normal(op.space.dim)).to(device=dev, dtype=dt)
        v = v / torch.linalg.vector_norm(v)
        lam, ok = None, False
        for _ in range(max_iter):
            Mv = op.torch_matvec(v)
            for lj, uj in zip(vals, vecs):  # Hotelling deflation
                Mv = Mv - lj * torch.dot(uj, v) * uj
            new = float(torch.dot(v, Mv))
            norm = torch.linalg.vector_norm(Mv)
            if float(norm) == 0.0:
                lam, ok = 0.0, True
                break
            v = Mv / norm
            if lam is not None and abs(new - lam) <= tol * abs(lam):
                lam, ok = new, True
                break
            lam = new
        vals.append(float(lam))
        vecs.append(v)
        conv.append(ok)
    wall = time.perf_counter() - t0
    values = np.asarray(vals, dtype=np.float64)
    order = np.argsort(-np.abs(values), kind="stable")
    values = values[order]
    U = torch.stack([vecs[i] for i in order])
    n = op.n_products
    return EigResult(values=values, vectors=U, residuals=_residuals(op, values, U), n_products=n, wall_s=wall,
                     space=op.space, method="power-iteration", converged=tuple(conv[i] for i in order))
