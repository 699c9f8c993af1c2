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
    /NNNN attrs    seed, c0, complete, and PDEBench's YAML ``config`` (see :func:`pdebench_config`)

Modes: ``"pdebench"`` reproduces PDEBench's published algorithm (solve_ivp RK45 at default
tolerances, time-integration error O(1e-2) at nx = 1024); ``"accurate"`` integrates the same
semi-discrete system to about 1e-8 (max abs error).
"""

from __future__ import annotations

import errno
import math
import multiprocessing as mp
import os
import shutil
import stat
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import SciPruneError
from ..checks import MAX_WORKERS, SEED_LIMIT, bytes_text, check_int, memory_bytes
from ..outputs import first_existing, output_or_nothing
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
    "pdebench_config",
    "ForeignFileError",
    "SIGNATURE",
    "MODES",
    "SOLVERS",
]

MODES = ("accurate", "pdebench")
#: Solvers per mode; the first is the default. "batched" is RODAS4 over a batch of samples.
SOLVERS = {"accurate": ("batched", "radau", "bdf"), "pdebench": ("rk45",)}
#: Tolerances of the scipy reference path of accurate mode.
REFERENCE_RTOL, REFERENCE_ATOL = 1e-10, 1e-12
#: 2: PDEBench's ``config`` attribute on every sample group and the :data:`SIGNATURE` user block.
FORMAT_VERSION = 2
_PARTIAL_PREFIX = "_partial_"


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


# ----------------------------------------------------------------------------------------------
# HDF5 generator

#: The first bytes of every file the generator writes, in an HDF5 user block (which every HDF5
#: reader skips). They mark a file as ours even when a kill has left its HDF5 structure unreadable,
#: so such a file is replaced instead of being a dead end, while anybody else's file is never touched.
SIGNATURE = b"sciprune.data.diffsorp generator file\n"
_USERBLOCK = 512
#: Bytes of HDF5 metadata per sample group (headers, links, attributes; about 4 kB measured).
GROUP_BYTES = 8192
#: Extra bytes reserved on disk before each HDF5 write, for the growth of the root group's index.
RESERVE_MARGIN = 1 << 16
#: Bytes per (sample, cell) and per (sample, cell, time) while a chunk is solved and handed over:
#: solver work arrays, the float64 solution, its float32 copy and the pickled copy sent back.
SOLVE_BYTES_PER_CELL, SOLVE_BYTES_PER_POINT = 512, 24


class ForeignFileError(SciPruneError):
    """The output path holds a file that the generator did not write; it is never modified."""


def pdebench_config(seed: int, *, nx: int, nt: int, t_end: float = 500.0,
                    params: DiffSorpParams = DiffSorpParams()) -> str:
    """The per-sample ``config`` attribute that PDEBench's generator writes, for this file's sample.

    PDEBench (``pdebench/data_gen/gen_diff_sorp.py::simulator``) stores
    ``OmegaConf.to_yaml(config)`` of ``configs/diff-sorp.yaml`` with ``sim.seed = i`` on group i,
    and its PINN loader (``pdebench/models/pinn/utils.py::PINNDataset1D``) parses it with
    ``yaml.SafeLoader`` and reads ``name``, ``sim.x_left``, ``sim.x_right``, ``sim.xdim``,
    ``sim.seed`` and ``plot.dim``. The same keys, in the same order and the same YAML form
    (PyYAML's block style), are written here with the values of this file: ``tdim`` is the number of
    stored times (PDEBench's yaml says 501 although its file holds 101) and ``xdim`` the number of
    cells. Left out are the keys of PDEBench's run that say where its files went (``work_dir``,
    ``data_dir``, ``output_path``) and its upload settings (``upload``, ``dataverse``): they are
    paths of that run and would make a sample depend on where the file is. The text is fixed and
    simple, so it is written here without a YAML library (tests read it back with PyYAML).
    """
    integral = {"rho_s": params.rho_s, "t": t_end}  # ints in PDEBench's yaml when whole numbers
    sim = [("D", params.D), ("por", params.phi), ("rho_s", integral["rho_s"]), ("k_f", params.k_f),
           ("n_f", params.n_f), ("sol", params.u_left), ("t", integral["t"]), ("tdim", int(nt)),
           ("x_left", 0.0), ("x_right", 1.0), ("xdim", int(nx)), ("n", 1), ("seed", int(seed))]
    lines = ["name: 1d_diff-sorp", "sim:"]
    lines += [f"  {k}: {_yaml_number(v, k in integral)}" for k, v in sim]
    lines += ["plot:", "  t_idx: 1.0", "  dim: 1", "  channel_idx: 0"]
    return "\n".join(lines) + "\n"


def _yaml_number(value: float | int, whole_as_int: bool = False) -> str:
    """A number as PyYAML's safe dumper writes it (so ``yaml.safe_load`` reads back the same value)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return str(int(value))
    v = float(value)
    if whole_as_int and math.isfinite(v) and v == int(v):
        return str(int(v))
    if math.isnan(v):
        return ".nan"
    if math.isinf(v):
        return ".inf" if v > 0 else "-.inf"
    text = repr(v).lower()
    return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text


def _file_attrs(nx: int, nt: int, t_end: float, mode: str, solver: str,
                params: DiffSorpParams) -> dict:
    """Root attributes; all but ``format_version`` must match for a run to resume into a file."""
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


def _one_line(err: BaseException) -> str:
    return " ".join(str(getattr(err, "strerror", None) or err).split()) or type(err).__name__


# ---- what is at the output path ---------------------------------------------------------------

class _State:
    """What an existing file holds: ``kind`` is ``missing``, ``empty`` (0 bytes, or HDF5 without
    any member or attribute), ``damaged`` (ours, but not readable as HDF5) or ``ours``; for ``ours``,
    ``done`` are the complete requested samples, ``mismatch`` the root attributes that differ from
    this request, ``dirty`` whether partial or incomplete groups must be deleted, ``no_config``
    the complete groups that still lack PDEBench's ``config`` attribute (files of format 1),
    ``samples`` the number of complete groups and ``version`` the file's ``format_version``."""

    def __init__(self, kind: str, done: frozenset = frozenset(), mismatch: tuple = (),
                 dirty: bool = False, no_config: tuple = (), samples: int = 0,
                 version: object = FORMAT_VERSION) -> None:
        self.kind, self.done, self.mismatch = kind, done, mismatch
        self.dirty, self.no_config, self.samples, self.version = dirty, no_config, samples, version

    def complete(self, names: list[str]) -> bool:
        """True when the file holds every requested sample and no leftover of a killed run."""
        return (self.kind == "ours" and not self.mismatch and not self.dirty
                and len(self.done) == len(names))

    def needs_repair(self, writing: bool) -> bool:
        """Leftovers to delete, or (when samples are about to be written anyway) format-1
        groups to give PDEBench's ``config`` attribute."""
        return self.dirty or (writing and (bool(self.no_config) or self.version != FORMAT_VERSION))


def _has_signature(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(SIGNATURE)) == SIGNATURE


def _inspect(path: Path, expected: dict, names: list[str]) -> _State:
    """Read (never write) what ``path`` holds; a file that is not ours raises ForeignFileError."""
    import h5py

    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _State("missing")
    if not stat.S_ISREG(st.st_mode):
        raise SciPruneError(f"{path} exists and is not a regular file; give the path of an HDF5 "
                            "file to write")
    if st.st_size == 0:
        return _State("empty")
    ours = _has_signature(path)
    try:
        f = h5py.File(path, "r")
    except BlockingIOError:
        raise SciPruneError(f"{path} is open in another program (HDF5 file lock); "
                            "close it and run again") from None
    except OSError as exc:
        if ours and exc.errno is None:  # HDF5 found its structure broken (not a system error)
            return _State("damaged")
        if exc.errno is not None:
            raise
        raise ForeignFileError(f"{path} exists and is not an HDF5 file that sciprune's generator "
                               f"wrote ({_one_line(exc)}); it is left untouched: choose another "
                               "path or delete it") from None
    with f:
        keys = list(f.keys())
        try:
            attrs = dict(f.attrs)
        except (OSError, TypeError, ValueError):  # an attribute h5py cannot read: not one of ours
            attrs = {"generator": None}
        if not keys and not attrs:
            return _State("empty")
        gen = attrs.get("generator")
        if not ours and (gen is None or not _same(gen, expected["generator"])):
            raise ForeignFileError(f"{path} exists and was not written by sciprune's "
                                   "diffusion-sorption generator; it is left untouched: choose "
                                   "another path or delete it")
        mismatch = tuple(f"{k}: file has {_plain(attrs.get(k))!r}, this run asks for {v!r}"
                         for k, v in expected.items()
                         if k != "format_version" and (k not in attrs or not _same(attrs[k], v)))
        shape = _shape(attrs, expected)  # the file's own grid: its samples count even on a mismatch
        complete = {k for k in keys if k.isdigit() and _complete(f[k], shape)}
        dirty = any(_leftover(k, complete) for k in keys)
        wanted = set(names)
        no_config = tuple(sorted(k for k in complete & wanted if "config" not in f[k].attrs))
        return _State("ours", frozenset(complete & wanted), mismatch, dirty, no_config,
                      samples=len(complete), version=_plain(attrs.get("format_version")))


def _leftover(key: str, complete: set[str]) -> bool:
    """A root member left by an interrupted run: a partial group, or a sample group whose
    ``complete`` marker is missing. Other members (a user's own additions) are left alone."""
    return key.startswith(_PARTIAL_PREFIX) or (key.isdigit() and key not in complete)


def _shape(attrs: dict, expected: dict) -> tuple[int, int, int]:
    """(nt, nx, 1) from the file's attributes where they are integers, else from ``expected``."""
    def get(key: str) -> int:
        v = _plain(attrs.get(key, expected[key]))
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else int(expected[key])

    return get("nt"), get("nx"), 1


def _complete(g: object, shape: tuple[int, int, int]) -> bool:
    """A sample group whose ``complete`` marker (set last) is there, with its three datasets."""
    import h5py

    return (isinstance(g, h5py.Group) and _same(g.attrs.get("complete", 0), 1)
            and isinstance(g.get("data"), h5py.Dataset) and g["data"].shape == shape
            and isinstance(g.get("grid/x"), h5py.Dataset) and isinstance(g.get("grid/t"), h5py.Dataset))


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


# ---- solving and writing ------------------------------------------------------------------------

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
            raise
