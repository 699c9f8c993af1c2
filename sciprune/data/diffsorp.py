"""PDEBench's 1D diffusion-sorption data set: per-sample solves and a resumable HDF5 generator.

Equation (PDEBench, Takamoto et al. 2022): ``du/dt = D / R(u) * d2u/dx2`` on x in (0, 1),
t in [0, 500], ``R(u) = 1 + ((1-phi)/phi) rho_s k_f n_f (u + 1e-6)**(n_f - 1)``, constant initial
value ``c ~ U(0, 0.2)`` per sample, left ghost cell at 1, right ghost cell
``D (u_{N-2} - u_{N-1}) / dx``. The discretisation and solvers are in
:mod:`sciprune.data.diffsorp_solvers`; this module validates input, draws the initial values and
writes PDEBench's per-sample HDF5 layout::

    /NNNN/data     (nt, nx, 1) float32   u(t, x), axes (t, x, channel)
    /NNNN/grid/x   (nx,)       float32   cell centres (i + 1/2)/nx
    /NNNN/grid/t   (nt,)       float32   linspace(0, t_end, nt)

Modes: ``"pdebench"`` reproduces PDEBench's published algorithm (solve_ivp RK45 at default
tolerances, time-integration error O(1e-2) at nx = 1024); ``"accurate"`` integrates the same
semi-discrete system to about 1e-8 (max abs error).
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataFormatError, SciPruneError
from .diffsorp_solvers import (
    ACCURATE_TOL,
    DiffSorpParams,
    cell_centres,
    retardation,
    rk45_pdebench,
    rodas4_batch,
    scipy_implicit,
)

__all__ = [
    "DiffSorpParams",
    "retardation",
    "initial_value",
    "cell_centres",
    "solve_sample",
    "solve_batch",
    "time_grid",
    "generate",
    "MODES",
    "SOLVERS",
]

MODES = ("accurate", "pdebench")
#: Solvers per mode; the first is the default. "batched" is RODAS4 over a batch of samples.
SOLVERS = {"accurate": ("batched", "radau", "bdf"), "pdebench": ("rk45",)}
#: Tolerances of the scipy reference path of accurate mode.
REFERENCE_RTOL, REFERENCE_ATOL = 1e-10, 1e-12
FORMAT_VERSION = 1
_PARTIAL_PREFIX = "_partial_"


def initial_value(seed: int) -> float:
    """PDEBench's initial value for sample ``seed``: ``np.random.seed(seed); uniform(0, 0.2)``.

    The legacy global MT19937 generator is used on purpose: it is what PDEBench's generator used
    when the published ``1D_diff-sorp_NA_NA.h5`` was made (seed i -> group i), so sample i here
    starts from the same constant as group i of that file. The global state is saved and restored.
    """
    seed = _check_int("seed", seed, 0)
    state = np.random.get_state()
    try:
        # Global RNG demanded by the published format (PDEBench's legacy seeding), see docstring.
        np.random.seed(seed)
        return float(np.random.uniform(0.0, 0.2))
    finally:
        np.random.set_state(state)


def _check_int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SciPruneError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_common(nx: object, nt: object, t_end: object, mode: object,
                  solver: object) -> tuple[int, int, float, str, str]:
    nx = _check_int("nx", nx, 3)
    nt = _check_int("nt", nt, 2)
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
        nx = _check_int("nx", nx, 3)
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


# ----------------------------------------------------------------------------------------------
# HDF5 generator


def _file_attrs(nx: int, nt: int, t_end: float, mode: str, solver: str,
                params: DiffSorpParams) -> dict:
    """Root attributes; every one of them must match for a run to resume into an existing file."""
    if solver == "rk45":
        rtol, atol = 1e-3, 1e-6
    elif solver == "batched":
        rtol = atol = ACCURATE_TOL
    else:
        rtol, atol = REFERENCE_RTOL, REFERENCE_ATOL
    return {
        "generator": "sciprune.data.diffsorp",
        "pde": "diffusion-sorption 1D (PDEBench)",
        "format_version": FORMAT_VERSION,
        "mode": mode,
        "solver": {"rk45": "scipy solve_ivp RK45 (defaults)", "batched": "RODAS4 batched",
                   "radau": "scipy solve_ivp Radau", "bdf": "scipy solve_ivp BDF"}[solver],
        "rtol": rtol,
        "atol": atol,
        "D": params.D, "phi": params.phi, "rho_s": params.rho_s, "k_f": params.k_f,
        "n_f": params.n_f, "u_left": params.u_left, "eps": params.eps,
        "clip_negative_u_in_R": mode == "accurate",
        "nx": nx, "nt": nt, "t_end": t_end,
        "seeding": "np.random.seed(seed); c0 = np.random.uniform(0, 0.2)",
    }


def _plain(a: object) -> object:
    """An HDF5 attribute value as a plain Python value (str, int, float, bool)."""
    if isinstance(a, bytes):
        a = a.decode()
    return a.item() if isinstance(a, np.generic) else a


def _same(a: object, b: object) -> bool:
    return _plain(a) == b


def _prepare_file(path: Path, expected: dict, names: list[str], overwrite: bool) -> set[str]:
    """Create or check the file; drop partial groups; return the names of finished samples."""
    import h5py

    if path.exists() and overwrite:
        path.unlink()
    if not path.exists():
        with h5py.File(path, "w") as f:
            f.attrs.update(expected)
        return set()
    try:
        f = h5py.File(path, "a")
    except OSError as exc:
        raise DataFormatError(f"cannot open {path} as HDF5 to resume ({exc}); "
                              "delete it or pass overwrite=True") from exc
    with f:
        if f.attrs.get("generator") is None or not _same(f.attrs["generator"],
                                                         expected["generator"]):
            raise SciPruneError(f"{path} exists and was not written by sciprune's diffusion-sorption"
                                " generator; choose another path or pass overwrite=True")
        bad = [f"{k}: file has {_plain(f.attrs.get(k))!r}, this run asks for {v!r}"
               for k, v in expected.items() if k not in f.attrs or not _same(f.attrs[k], v)]
        if bad:
            raise SciPruneError(f"cannot resume into {path}: it was generated with other parameters"
                                f" ({'; '.join(bad)}); use another path or pass overwrite=True")
        for key in [k for k in f.keys() if k.startswith(_PARTIAL_PREFIX)]:
            del f[key]
        done = set()
        shape = (int(expected["nt"]), int(expected["nx"]), 1)
        for name in names:
            if name not in f:
                continue
            g = f[name]
            ok = (g.attrs.get("complete", 0) == 1 and "data" in g and g["data"].shape == shape
                  and "grid/x" in g and "grid/t" in g)
            if ok:
                done.add(name)
            else:
                del f[name]
    return done


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


def _exit_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the parent dies (e.g. killed mid-run), not later."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _write_sample(f, seed: int, c0: float, u: np.ndarray, x32: np.ndarray,
                  t32: np.ndarray) -> None:
    """Write one group under a temporary name, mark it complete, then rename it to ``NNNN``."""
    name = f"{seed:04d}"
    tmp = _PARTIAL_PREFIX + name
    if tmp in f:
        del f[tmp]
    g = f.create_group(tmp)
    g.create_dataset("data", data=u[..., None])
    grid = g.create_group("grid")
    grid.create_dataset("x", data=x32)
    grid.create_dataset("t", data=t32)
    g.attrs["seed"] = np.int64(seed)
    g.attrs["c0"] = np.float64(c0)
    g.attrs["complete"] = np.int8(1)
    f.move(tmp, name)
    f.flush()


def generate(path: str | os.PathLike, *, n_samples: int, nx: int = 1024, nt: int = 101,
             mode: str = "accurate", workers: int | None = None, first_seed: int = 0,
             progress: Callable[[int, int], None] | None = None, t_end: float = 500.0,
             solver: str | None = None, batch_size: int = 32, overwrite: bool = False,
             params: DiffSorpParams = DiffSorpParams()) -> Path:
    """Write samples ``first_seed .. first_seed + n_samples - 1`` in PDEBench's layout; resumable.

    Sample with seed s starts from :func:`initial_value` (s) and is stored in group ``f"{s:04d}"``.
    Samples are solved in ``workers`` processes (default ``min(2, cpu count)``; 1 runs in-process)
    in chunks of up to ``batch_size`` seeds; only this process writes the file, one sample at a
    time, flushing after each. A group is written under ``_partial_NNNN`` and renamed when complete,
    so after an interruption a re-run skips finished groups, deletes partial ones and solves the
    rest. Resuming into a file made with other parameters (mode, solver, nx, nt, t_end, physical
    constants) raises :class:`SciPruneError`; ``overwrite=True`` starts a new file instead.
    ``progress(done, total)`` is called after each sample written, ``done`` counting finished ones.

    Returns the path of the file.
    """
    n_samples = _check_int("n_samples", n_samples, 1)
    first_seed = _check_int("first_seed", first_seed, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    nx, nt, t_end, mode, solver = _check_common(nx, nt, t_end, mode, solver)
    workers = min(2, os.cpu_count() or 1) if workers is None else _check_int("workers", workers, 1)
    if not isinstance(params, DiffSorpParams):
        raise SciPruneError(f"params must be a DiffSorpParams, got {type(params).__name__}")
    path = Path(path)
    if path.is_dir():
        raise SciPruneError(f"{path} is a folder; give the path of an HDF5 file to write")
    path.parent.mkdir(parents=True, exist_ok=True)

    expected = _file_attrs(nx, nt, t_end, mode, solver, params)
    seeds = list(range(first_seed, first_seed + n_samples))
    finished = _prepare_file(path, expected, [f"{s:04d}" for s in seeds], overwrite)
    todo = [s for s in seeds if f"{s:04d}" not in finished]
    if not todo:
        return path
    # Chunking depends only on the work list, never on `workers`, so any worker count gives
    # bit-identical files. rk45 and the scipy references solve one sample per task.
    size = 1 if solver != "batched" else min(batch_size, math.ceil(len(todo) / 8))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    x32 = cell_centres(nx).astype(np.float32)
    t32 = time_grid(nt, t_end).astype(np.float32)
    done = len(finished)

    import h5py

    def write_all(results: list[tuple[int, float, np.ndarray]], f) -> None:
        nonlocal done
        for seed, c0, u in results:
            _write_sample(f, seed, c0, u, x32, t32)
            done += 1
            if progress is not None:
                progress(done, n_samples)

    args = (nx, nt, t_end, solver, params)
    if workers == 1 or len(chunks) == 1:
        with h5py.File(path, "a") as f:
            for chunk in chunks:
                write_all(_solve_chunk(chunk, *args), f)
        return path
    # The pool starts before the file is reopened, so no child inherits an open HDF5 handle.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=ctx,
                             initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
        pending = {pool.submit(_solve_chunk, chunk, *args) for chunk in chunks}
        try:
            with h5py.File(path, "a") as f:
                while pending:
                    ready, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in ready:
                        write_all(fut.result(), f)
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise
    return path
