"""Writing the generator's HDF5 file: a new empty file, repairs after a kill, and the samples.

Every write happens under the lock of :func:`sciprune.data.diffsorp.generate`. A sample group is
written under ``_partial_NNNN``, its ``complete`` marker set last, then renamed; disk space is
reserved before each HDF5 write (:func:`_reserve`) so a full disk is an OSError before HDF5 writes
anything. Samples are solved in worker processes (:func:`~sciprune.data.diffsorp_samples._solve_chunk`)
and written by this process only, one at a time, flushing after each.
"""

from __future__ import annotations

import errno
import math
import multiprocessing as mp
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SciPruneError
from .diffsorp_format import (
    _PARTIAL_PREFIX,
    _USERBLOCK,
    FORMAT_VERSION,
    GROUP_BYTES,
    SIGNATURE,
    _complete,
    _inspect,
    _leftover,
    _one_line,
    _State,
    pdebench_config,
)
from .diffsorp_samples import _solve_chunk, time_grid
from .diffsorp_solvers import DiffSorpParams, cell_centres

__all__ = ["RESERVE_MARGIN"]

#: Extra bytes reserved on disk before each HDF5 write, for the growth of the root group's index.
RESERVE_MARGIN = 1 << 16


def _new_file(path: Path, expected: dict) -> None:
    """Write an empty file with the root attributes under a temporary name, then rename it onto
    ``path``: the path holds either nothing, the old file or a complete empty file, never half."""
    import h5py

    tmp = _temp_path(path)
    try:
        with h5py.File(tmp, "w", userblock_size=_USERBLOCK) as f:
            f.attrs.update(expected)
        with open(tmp, "r+b") as fh:
            fh.write(SIGNATURE)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_path(path: Path) -> Path:
    """The one temporary name of ``path`` (used only under the lock, so a leftover is stale)."""
    return path.with_name(f".{path.name}.sciprune-tmp")


def _repair(path: Path, state: _State, nx: int, nt: int, t_end: float,
            params: DiffSorpParams) -> None:
    """Delete partial and incomplete groups, add ``config`` to complete format-1 groups."""
    import h5py

    shape = (nt, nx, 1)
    with h5py.File(path, "a") as f:
        _reserve(f, path, GROUP_BYTES * (len(state.no_config) + 1) + RESERVE_MARGIN)
        complete = {k for k in f.keys() if k.isdigit() and _complete(f[k], shape)}
        for key in [k for k in f.keys() if _leftover(k, complete)]:
            del f[key]
        for key in state.no_config:
            f[key].attrs["config"] = pdebench_config(int(key), nx=nx, nt=nt, t_end=t_end,
                                                     params=params)
        f.attrs["format_version"] = FORMAT_VERSION


def _prepare_file(path: Path, expected: dict, names: list[str],
                  overwrite: bool) -> tuple[_State, bool]:
    """Make ``path`` a valid file of ours (under the lock); returns its state and whether this call
    created it. A missing, empty or damaged file of ours (or any file with ``overwrite``) is
    replaced by a new empty one; so is a file of ours made with other parameters that holds no
    complete sample. Leftover groups of a killed run are deleted later by :func:`_repair`."""
    _temp_path(path).unlink(missing_ok=True)  # left by a killed run; no live writer (we hold the lock)
    state = _State("missing") if overwrite else _inspect(path, expected, names)
    if state.kind == "ours" and state.mismatch and state.samples == 0:
        state = _State("empty")
    if state.kind != "ours":
        _new_file(path, expected)
        return _State("ours"), state.kind == "missing"
    if state.mismatch:
        raise SciPruneError(f"cannot resume into {path}: it was generated with other parameters"
                            f" ({'; '.join(state.mismatch)}); use another path, or delete it (or "
                            "pass overwrite=True) to generate it again")
    return state, False


# ---- resources ----------------------------------------------------------------------------------

def _sample_bytes(nx: int, nt: int) -> int:
    """Bytes one sample takes in the file: data, grid, group metadata (an upper estimate)."""
    return 4 * nt * nx + 4 * (nx + nt) + GROUP_BYTES


def _reserve(f, path: Path, nbytes: int) -> None:
    """Allocate ``nbytes`` of disk where HDF5 writes next in the open file ``f`` (at ``path``).

    HDF5 appends at its end of file, inside the space reserved here, so a full disk is an OSError
    raised here, before HDF5 writes anything, never a failed write inside HDF5 (after which h5py
    can crash the process with a segmentation fault). The file may end with up to ``nbytes``
    of unused zeros, which every HDF5 reader ignores. Without ``posix_fallocate`` (macOS) the
    free space is checked instead.
    """
    if not hasattr(os, "posix_fallocate"):
        if shutil.disk_usage(path.parent).free < nbytes:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, f.id.get_filesize(), nbytes)
    finally:
        os.close(fd)


# ---- solving and writing ------------------------------------------------------------------------

def _exit_with_parent(parent: int) -> None:
    """Pool initializer: end this worker when the parent dies (e.g. killed mid-run), not later."""
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def _write_sample(f, seed: int, c0: float, u: np.ndarray, x32: np.ndarray, t32: np.ndarray,
                  config: str) -> None:
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
    g.attrs["config"] = config
    g.attrs["complete"] = np.int8(1)
    f.move(tmp, name)
    f.flush()


def _write_missing(path: Path, todo: list[int], done: int, created: bool, n_samples: int,
                   workers: int, batch_size: int, solver: str, nx: int, nt: int, t_end: float,
                   params: DiffSorpParams, progress: Callable[[int, int], None] | None) -> None:
    """Solve and write ``todo``. On any failure, finished samples stay for a later run, and a file
    this call created without finishing a sample is removed; an OS error (disk full, I/O error)
    becomes one line saying what was kept."""
    written = [0]

    def count(finished: int, total: int) -> None:
        written[0] += 1
        if progress is not None:
            progress(finished, total)

    try:
        _solve_and_write(path, todo, done, n_samples, workers, batch_size, solver, nx, nt, t_end,
                         params, count)
    except BaseException as err:
        kept = done + written[0]
        if created and kept == 0:
            path.unlink(missing_ok=True)
        if not isinstance(err, OSError):
            raise
        what = (f"{kept} of {n_samples} samples are complete in it and kept: fix the cause and run "
                "the same command again to resume") if kept else "no file was kept"
        raise SciPruneError(f"{path}: writing failed ({_one_line(err)}); {what}") from None


def _solve_and_write(path: Path, todo: list[int], done: int, n_samples: int, workers: int,
                     batch_size: int, solver: str, nx: int, nt: int, t_end: float,
                     params: DiffSorpParams, progress: Callable[[int, int], None]) -> None:
    """Solve the samples ``todo`` in chunks and append them to ``path``, calling
    ``progress(done, n_samples)`` after each."""
    import h5py

    # Chunking depends only on the work list, never on `workers`, so any worker count gives
    # bit-identical files. rk45 and the scipy references solve one sample per task. A sample's
    # result does not depend on the other members of its chunk, so a resumed file (other chunks)
    # equals an uninterrupted one too (tests/test_generation_interrupt.py checks both).
    size = 1 if solver != "batched" else min(batch_size, math.ceil(len(todo) / 8))
    chunks = [todo[i:i + size] for i in range(0, len(todo), size)]
    x32 = cell_centres(nx).astype(np.float32)
    t32 = time_grid(nt, t_end).astype(np.float32)

    reserve = _sample_bytes(nx, nt) + RESERVE_MARGIN

    def write_all(results: list[tuple[int, float, np.ndarray]], f) -> None:
        nonlocal done
        for seed, c0, u in results:
            config = pdebench_config(seed, nx=nx, nt=nt, t_end=t_end, params=params)
            _reserve(f, path, reserve)
            _write_sample(f, seed, c0, u, x32, t32, config)
            done += 1
            progress(done, n_samples)

    args = (nx, nt, t_end, solver, params)
    if workers == 1 or len(chunks) == 1:
        with h5py.File(path, "a") as f:
            for chunk in chunks:
                write_all(_solve_chunk(chunk, *args), f)
        return
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
            _stop_workers(pool)
            raise


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers now. After an interrupt (SIGINT reaches the workers too) a worker can die
    mid-task, and the pool's own ``shutdown(wait=True)`` may then wait for a result that never comes;
    terminated workers make the pool notice and let the ``with`` block exit. Their samples were never
    written, so nothing is lost (the file keeps only complete samples)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # CPython's pool keeps them here
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(timeout=10)
