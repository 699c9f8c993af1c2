"""One diffusion-sorption sample and batches of them: initial values, input checks, solves.

The equation, its discretisation and the integrators are in :mod:`sciprune.data.diffsorp_solvers`;
this module checks a request (grid, end time, mode, solver), draws PDEBench's initial value per seed
and calls the solver of the mode (``"pdebench"``: PDEBench's RK45; ``"accurate"``: about 1e-8,
see :mod:`sciprune.data.diffsorp`). Public names are re-exported by :mod:`sciprune.data.diffsorp`.
"""

from __future__ import annotations

import math

import numpy as np

from ..checks import check_int
from ..errors import SciPruneError
from .diffsorp_solvers import (
    ACCURATE_TOL,
    DiffSorpParams,
    rk45_pdebench,
    rodas4_batch,
    scipy_implicit,
)

__all__ = ["MODES", "SOLVERS", "initial_value", "time_grid", "solve_batch", "solve_sample"]

MODES = ("accurate", "pdebench")
#: Solvers per mode; the first is the default. "batched" is RODAS4 over a batch of samples.
SOLVERS = {"accurate": ("batched", "radau", "bdf"), "pdebench": ("rk45",)}
#: Tolerances of the scipy reference path of accurate mode.
REFERENCE_RTOL, REFERENCE_ATOL = 1e-10, 1e-12


def initial_value(seed: int) -> float:
    """PDEBench's initial value for sample ``seed``: ``np.random.seed(seed); uniform(0, 0.2)``.

    The legacy global MT19937 generator is used on purpose: it is what PDEBench's generator used
    when the published ``1D_diff-sorp_NA_NA.h5`` was made (seed i -> group i), so sample i here
    starts from the same constant as group i of that file. The global state is saved and restored.
    """
    seed = check_int(seed, "seed", lo=0)
    state = np.random.get_state()
    try:
        # Global RNG demanded by the published format (PDEBench's legacy seeding), see docstring.
        np.random.seed(seed)
        return float(np.random.uniform(0.0, 0.2))
    finally:
        np.random.set_state(state)


def _check_common(nx: object, nt: object, t_end: object, mode: object,
                  solver: object) -> tuple[int, int, float, str, str]:
    nx = check_int(nx, "nx", lo=3)
    nt = check_int(nt, "nt", lo=2)
    if isinstance(t_end, bool) or not isinstance(t_end, (int, float, np.floating, np.integer)) \
            or not math.isfinite(t_end) or t_end <= 0:
        raise SciPruneError(f"t_end must be a finite number > 0, got {t_end!r}")
    if mode not in MODES:
        raise SciPruneError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    solver = SOLVERS[mode][0] if solver is None else solver
    if solver not in SOLVERS[mode]:
        raise SciPruneError(
            f"solver must be one of {', '.join(SOLVERS[mode])} in {mode} mode, got {solver!r}")
    return nx, nt, float(t_end), str(mode), str(solver)


def _check_c0(c0: np.ndarray) -> np.ndarray:
    c0 = np.asarray(c0, dtype=np.float64).ravel()
    if c0.size == 0 or not np.all(np.isfinite(c0)) or np.any(c0 < 0):
        raise SciPruneError(f"c0 must be finite values >= 0, got {c0!r}")
    return c0


def time_grid(nt: int, t_end: float = 500.0) -> np.ndarray:
    """Output times ``linspace(0, t_end, nt)`` (PDEBench: 101 times, 0, 5, ..., 500)."""
    return np.linspace(0.0, t_end, nt)


def solve_batch(c0: np.ndarray, *, nx: int, nt: int = 101, t_end: float = 500.0,
                params: DiffSorpParams = DiffSorpParams(), tol: float = ACCURATE_TOL,
                t_eval: np.ndarray | None = None) -> np.ndarray:
    """Accurate-mode solutions for many initial values at once (batched RODAS4).

    Each sample gets its own adaptive step sequence, so a sample's result does not depend on the
    other members of the batch. ``t_eval`` (increasing, starting at the initial time) overrides
    ``linspace(0, t_end, nt)``.

    Args:
        c0: (B,) constant initial values.
    Returns:
        (B, nt, nx) float64.
    """
    if t_eval is None:
        nx, nt, t_end, _, _ = _check_common(nx, nt, t_end, "accurate", None)
        t_eval = time_grid(nt, t_end)
    else:
        nx = check_int(nx, "nx", lo=3)
        t_eval = np.asarray(t_eval, dtype=np.float64)
        if t_eval.ndim != 1 or t_eval.size < 2 or not np.all(np.diff(t_eval) > 0):
            raise SciPruneError("t_eval must be a 1-D strictly increasing array of >= 2 times")
    if not (isinstance(tol, (float, int)) and 0 < tol < 1):
        raise SciPruneError(f"tol must be a number in (0, 1), got {tol!r}")
    return rodas4_batch(_check_c0(c0), nx, t_eval, params, tol=float(tol))[0]


def solve_sample(c0: float, *, nx: int, nt: int = 101, t_end: float = 500.0,
                 mode: str = "accurate", params: DiffSorpParams = DiffSorpParams(),
                 solver: str | None = None) -> np.ndarray:
    """Solve one sample ``u(x, 0) = c0`` and return u at ``linspace(0, t_end, nt)``: (nt, nx) float64.

    ``mode="pdebench"``: solve_ivp RK45 at default tolerances, unclipped R (PDEBench's algorithm).
    ``mode="accurate"``: ``solver="batched"`` (RODAS4, default) or the scipy references
    ``"radau"`` / ``"bdf"`` (rtol 1e-10, atol 1e-12, analytic tridiagonal Jacobian).
    """
    nx, nt, t_end, mode, solver = _check_common(nx, nt, t_end, mode, solver)
    c = _check_c0(c0)
    if c.size != 1:
        raise SciPruneError(f"c0 must be one number, got {c0!r}; use solve_batch for many")
    t_eval = time_grid(nt, t_end)
    if solver == "rk45":
        return rk45_pdebench(c[0], nx, t_eval, params)
    if solver == "batched":
        return rodas4_batch(c, nx, t_eval, params)[0][0]
    return scipy_implicit(c[0], nx, t_eval, params, method={"radau": "Radau", "bdf": "BDF"}[solver],
                          rtol=REFERENCE_RTOL, atol=REFERENCE_ATOL)


def _solve_chunk(seeds: list[int], nx: int, nt: int, t_end: float, solver: str,
                 params: DiffSorpParams) -> list[tuple[int, float, np.ndarray]]:
    """Worker: solve the samples ``seeds``; returns (seed, c0, u float32 (nt, nx)) per sample."""
    c0 = np.array([initial_value(s) for s in seeds])
    t_eval = time_grid(nt, t_end)
    if solver == "batched":
        u = rodas4_batch(c0, nx, t_eval, params)[0]
    elif solver == "rk45":
        u = np.stack([rk45_pdebench(c, nx, t_eval, params) for c in c0])
    else:
        method = {"radau": "Radau", "bdf": "BDF"}[solver]
        u = np.stack([scipy_implicit(c, nx, t_eval, params, method=method, rtol=REFERENCE_RTOL,
                                     atol=REFERENCE_ATOL) for c in c0])
    return [(s, float(c), u[k].astype(np.float32)) for k, (s, c) in enumerate(zip(seeds, c0))]
