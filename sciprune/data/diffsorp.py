"""PDEBench's 1D diffusion-sorption data set: per-sample solves and a resumable HDF5 generator.

Equation (PDEBench, Takamoto et al. 2022): ``du/dt = D / R(u) * d2u/dx2`` on x in (0, 1),
t in [0, 500], ``R(u) = 1 + ((1-phi)/phi) rho_s k_f n_f (u + 1e-6)**(n_f - 1)``, constant initial
value ``c ~ U(0, 0.2)`` per sample, left ghost cell at 1, right ghost cell
``D (u_{N-2} - u_{N-1}) / dx``. The discretisation and solvers are in
:mod:`sciprune.data.diffsorp_solvers`; the checks, initial values and per-sample solves in
:mod:`sciprune.data.diffsorp_samples`; the file's layout and what an existing file holds in
:mod:`sciprune.data.diffsorp_format`; the writing in :mod:`sciprune.data.diffsorp_writing`. This
module is the entry point: :func:`generate` checks a request and drives the writing of
PDEBench's per-sample HDF5 layout, and every public name of the generator is importable from here::

    /NNNN/data     (nt, nx, 1) float32   u(t, x), axes (t, x, channel)
    /NNNN/grid/x   (nx,)       float32   cell centres (i + 1/2)/nx
    /NNNN/grid/t   (nt,)       float32   linspace(0, t_end, nt)
    /NNNN attrs    seed, c0, complete, and PDEBench's YAML ``config`` (see :func:`pdebench_config`)

Modes: ``"pdebench"`` reproduces PDEBench's published algorithm (solve_ivp RK45 at default
tolerances, time-integration error O(1e-2) at nx = 1024); ``"accurate"`` integrates the same
semi-discrete system to about 1e-8 (max abs error).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Callable

from ..checks import MAX_WORKERS, SEED_LIMIT, bytes_text, check_int, memory_bytes
from ..errors import SciPruneError
from ..outputs import first_existing, output_or_nothing
from .diffsorp_format import (
    FORMAT_VERSION,
    GROUP_BYTES,
    SIGNATURE,
    ForeignFileError,
    _file_attrs,
    _inspect,
    _one_line,
    _State,
    pdebench_config,
)
from .diffsorp_samples import (
    MODES,
    REFERENCE_ATOL,
    REFERENCE_RTOL,
    SOLVERS,
    _check_common,
    initial_value,
    solve_batch,
    solve_sample,
    time_grid,
)
from .diffsorp_solvers import ACCURATE_TOL, DiffSorpParams, cell_centres, retardation
from .diffsorp_writing import RESERVE_MARGIN, _prepare_file, _repair, _sample_bytes, _write_missing

__all__ = [
    "DiffSorpParams",
    "retardation",
    "initial_value",
    "cell_centres",
    "solve_sample",
    "solve_batch",
    "time_grid",
    "generate",
    "pdebench_config",
    "ForeignFileError",
    "SIGNATURE",
    "MODES",
    "SOLVERS",
]
# Also importable from here, as before the split: FORMAT_VERSION, GROUP_BYTES, RESERVE_MARGIN,
# REFERENCE_RTOL, REFERENCE_ATOL and ACCURATE_TOL (constants of the file and the solvers).

#: Bytes per (sample, cell) and per (sample, cell, time) while a chunk is solved and handed over:
#: solver work arrays, the float64 solution, its float32 copy and the pickled copy sent back.
SOLVE_BYTES_PER_CELL, SOLVE_BYTES_PER_POINT = 512, 24


def _check_memory(n_samples: int, nx: int, nt: int, workers: int, chunk: int) -> None:
    """Refuse, before anything is allocated, solves that would not fit in this machine's memory
    (an estimate, stated in the message)."""
    procs = min(workers, max(1, math.ceil(n_samples / chunk)))
    memory = (procs + 1) * chunk * nx * (SOLVE_BYTES_PER_CELL + SOLVE_BYTES_PER_POINT * nt)
    have = memory_bytes()
    if have and memory > have:
        raise SciPruneError(
            f"solving nx = {nx} by nt = {nt} in chunks of {chunk} sample(s) with {procs} worker "
            f"process(es) needs about {bytes_text(memory)} of memory, more than this machine's "
            f"{bytes_text(have)}; use a smaller grid or fewer workers")


def _check_disk(path: Path, n_samples: int, nx: int, nt: int, have_samples: int) -> None:
    """Refuse a file that would not fit in the free space of its folder (an estimate)."""
    per_sample = _sample_bytes(nx, nt)
    need = max(0, n_samples - have_samples) * per_sample + RESERVE_MARGIN
    free = shutil.disk_usage(first_existing(path.parent)).free
    if need > free:
        raise SciPruneError(
            f"{path}: {n_samples} sample(s) of nx = {nx} by nt = {nt} need about {bytes_text(need)} of "
            f"disk ({bytes_text(per_sample)} each), but only {bytes_text(free)} is free there; free space, or "
            "ask for fewer samples or a smaller grid")


def _prepare_output(path: Path, n_samples: int, nx: int, nt: int, have_samples: int) -> None:
    """:func:`sciprune.outputs.prepare_output` (a parent that is a file, an unwritable folder),
    then the disk estimate; folders made for a request that is then refused are removed again."""
    with output_or_nothing(path, what="diffusion-sorption output"):
        _check_disk(path, n_samples, nx, nt, have_samples)


def _lock(path: Path):
    """The lock ``<file>.lock`` that makes generation of one file one process at a time. The lock
    file stays after release, as filelock intends on Unix: removing it would let a waiter and a
    newcomer hold locks on two different inodes at once."""
    from filelock import FileLock

    return FileLock(str(path) + ".lock")


def generate(path: str | os.PathLike, *, n_samples: int, nx: int = 1024, nt: int = 101,
             mode: str = "accurate", workers: int | None = None, first_seed: int = 0,
             progress: Callable[[int, int], None] | None = None, t_end: float = 500.0,
             solver: str | None = None, batch_size: int = 32, overwrite: bool = False,
             params: DiffSorpParams = DiffSorpParams()) -> Path:
    """Write samples ``first_seed .. first_seed + n_samples - 1`` in PDEBench's layout; resumable.

    Sample with seed s starts from :func:`initial_value` (s) and is stored in group ``f"{s:04d}"``,
    with PDEBench's ``config`` attribute (:func:`pdebench_config`). Samples are solved in
    ``workers`` processes (default ``min(2, cpu count)``; 1 runs in-process) in chunks of up to
    ``batch_size`` seeds; only this process writes the file, one sample at a time, flushing after
    each. A group is written under ``_partial_NNNN``, its ``complete`` marker set last, and then
    renamed, so after an interruption (Ctrl-C, a kill) the same call skips finished groups, deletes
    partial ones and solves the rest; the completed file equals an uninterrupted one sample by
    sample, bit for bit. A file that holds every sample is only read, never written.

    Files the generator writes start with :data:`SIGNATURE` (an HDF5 user block). A missing,
    0-byte or member-less file, or one of ours that a kill left unreadable, is replaced by a new
    one (written under a temporary name, then renamed); a file the generator did not write is never
    modified (:class:`ForeignFileError`). Resuming into a file made with other parameters (mode,
    solver, nx, nt, t_end, physical constants) raises :class:`SciPruneError`; ``overwrite=True``
    starts a new file instead. ``<path>.lock`` (``filelock``) is held while the file is prepared
    and written, so two processes never write one file at once: the second waits, then finds the
    samples done. Before anything is written the output path is checked
    (:func:`sciprune.outputs.prepare_output`) and the request refused if the file would not fit
    on the disk or the solves in memory. If writing fails (e.g. the disk fills up), finished
    samples are kept for a later run, and a file this call created without finishing a sample is
    removed. ``progress(done, total)`` is called after each sample written, ``done`` counting
    finished ones.

    Returns the path of the file.
    """
    n_samples = check_int(n_samples, "n_samples", lo=1)
    first_seed = check_int(first_seed, "first_seed", lo=0)
    if first_seed + n_samples > SEED_LIMIT:
        raise SciPruneError(
            f"seeds first_seed .. first_seed + n_samples - 1 = {first_seed} .. "
            f"{first_seed + n_samples - 1} must be < 2**32 (numpy's seed range); lower first_seed "
            "or n_samples")
    batch_size = check_int(batch_size, "batch_size", lo=1)
    nx, nt, t_end, mode, solver = _check_common(nx, nt, t_end, mode, solver)
    workers = (min(2, os.cpu_count() or 1) if workers is None
               else check_int(workers, "workers", lo=1, hi=MAX_WORKERS))
    if not isinstance(params, DiffSorpParams):
        raise SciPruneError(f"params must be a DiffSorpParams, got {type(params).__name__}")
    path = _output_path(path)
    expected = _file_attrs(nx, nt, t_end, mode, solver, params)
    state = None if overwrite else _precheck(path, expected)
    chunk = 1 if solver != "batched" else min(batch_size, math.ceil(n_samples / 8))
    _check_memory(n_samples, nx, nt, workers, chunk)
    have = min(state.samples, n_samples) if state else 0
    if have == n_samples:
        names = [f"{s:04d}" for s in range(first_seed, first_seed + n_samples)]
        if _inspect(path, expected, names).complete(names):
            return path  # every sample is there: only read, never written (read-only folder is fine)
    _prepare_output(path, n_samples, nx, nt, have)
    names = [f"{s:04d}" for s in range(first_seed, first_seed + n_samples)]
    with _lock(path):
        try:
            state, created = _prepare_file(path, expected, names, overwrite)
            todo = [s for s in range(first_seed, first_seed + n_samples)
                    if f"{s:04d}" not in state.done]
            if state.needs_repair(writing=bool(todo)):
                _repair(path, state, nx, nt, t_end, params)
        except BlockingIOError:
            raise SciPruneError(f"{path} is open in another program (HDF5 file "
                                "lock); close it and run again") from None
        except OSError as err:  # e.g. a full disk while deleting leftovers of a killed run
            raise SciPruneError(f"{path}: cannot prepare the file ({_one_line(err)})") from None
        if todo:
            _write_missing(path, todo, len(state.done), created, n_samples, workers, batch_size,
                           solver, nx, nt, t_end, params, progress)
    return path


def _output_path(path: object) -> Path:
    if path is None or str(path) == "" or "\x00" in str(path):
        raise SciPruneError(f"the output path must be a non-empty path without NUL bytes, got {path!r}")
    p = Path(path)  # type: ignore[arg-type]
    if p.is_dir():
        raise SciPruneError(f"{p} is a folder; give the path of an HDF5 file to write")
    if p.exists() and not p.is_file():
        raise SciPruneError(f"{p} exists and is not a regular file; give the path of an HDF5 file "
                            "to write")
    return p


def _precheck(path: Path, expected: dict) -> _State | None:
    """What ``path`` holds, read without the lock; None when it cannot be read now (e.g. another
    process is writing it: the locked path decides). A foreign file is refused here, before any
    lock file is made beside it."""
    try:
        state = _inspect(path, expected, [])
    except ForeignFileError:
        raise
    except (SciPruneError, OSError):
        return None
    return state if state.kind == "ours" else None
