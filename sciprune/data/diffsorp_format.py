"""The generator's HDF5 file: its layout, attributes and signature, and what a file at a path holds.

PDEBench's per-sample layout (drawn in :mod:`sciprune.data.diffsorp`): one group ``NNNN`` per
seed with ``data`` (nt, nx, 1), ``grid/x``, ``grid/t`` and the attributes ``seed``, ``c0``,
``complete`` and ``config`` (:func:`pdebench_config`); the root attributes are :func:`_file_attrs`.
Every file starts with :data:`SIGNATURE` in an HDF5 user block. :func:`_inspect` reads (never
writes) an existing file and says what it holds (:class:`_State`); a file the generator did not
write raises :class:`ForeignFileError`. Public names are re-exported by :mod:`sciprune.data.diffsorp`.
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path

import numpy as np

from ..errors import SciPruneError
from .diffsorp_samples import REFERENCE_ATOL, REFERENCE_RTOL
from .diffsorp_solvers import ACCURATE_TOL, DiffSorpParams

__all__ = ["SIGNATURE", "FORMAT_VERSION", "GROUP_BYTES", "ForeignFileError", "pdebench_config"]

#: 2: PDEBench's ``config`` attribute on every sample group and the :data:`SIGNATURE` user block.
FORMAT_VERSION = 2
_PARTIAL_PREFIX = "_partial_"

#: The first bytes of every file the generator writes, in an HDF5 user block (which every HDF5
#: reader skips). They mark a file as ours even when a kill has left its HDF5 structure unreadable,
#: so such a file is replaced instead of being a dead end, while anybody else's file is never touched.
SIGNATURE = b"sciprune.data.diffsorp generator file\n"
_USERBLOCK = 512
#: Bytes of HDF5 metadata per sample group (headers, links, attributes; about 4 kB measured).
GROUP_BYTES = 8192


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
