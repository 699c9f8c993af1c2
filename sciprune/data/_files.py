"""The one way the data readers open input files: regular files only, HDF5 through checked links.

Every reader (PDEBench, classification HDF5, IDX, ``data info``) goes through
:func:`regular_file` before it opens anything, so a FIFO, a device or a folder given as a data
file is refused instead of blocking or reading forever, and through :func:`open_h5` /
:func:`dataset` / :func:`read` for HDF5, so a truncated or corrupt file, a group where a
dataset is expected, an unsupported dtype (string, compound, complex, bool ...), an empty
dataset, a dangling soft link or an external link is one :class:`DataFormatError` naming the
file and the key. External links, external raw storage and virtual datasets are refused: a data
file is never followed out of itself. :func:`write_atomic` is the one way the data layer writes
a file: checked against the free space, via a temp file that no error leaves behind.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import stat
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataFormatError, SciPruneError
from ..checks import bytes_text
from ..outputs import write_bytes_atomic

__all__ = ["regular_file", "open_h5", "node", "subgroups", "dataset", "read", "attrs", "write_atomic", "KIND_NAMES"]

#: numpy dtype kinds in words, for messages.
KIND_NAMES = {
    "f": "floating point", "i": "signed integer", "u": "unsigned integer", "b": "boolean",
    "c": "complex", "S": "byte string", "U": "string", "O": "object (variable-length string)",
    "V": "compound/opaque", "M": "datetime", "m": "timedelta",
}
_MAX_SOFT_LINKS = 16
_FILE_TYPES = (
    (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
)


def regular_file(path: str | os.PathLike, what: str = "a data file") -> Path:
    """``path`` if it is an existing regular file (links followed); else a :class:`DataFormatError`.

    Checked with ``os.stat`` before anything opens the path, so special files never block a reader.
    """
    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DataFormatError(f"{p}: no such file; expected {what}") from None
    except OSError as err:
        raise DataFormatError(f"{p}: cannot access ({err.strerror or err}); expected {what}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = next((name for test, name in _FILE_TYPES if test(st.st_mode)), "not a regular file")
        raise DataFormatError(f"{p}: is {kind}, not a regular file; expected {what}")
    if not os.access(p, os.R_OK):
        raise DataFormatError(f"{p}: cannot be read (permission denied); expected {what}")
    return p


def _reason(err: BaseException) -> str:
    """The innermost parenthesised reason of an HDF5 error message, on one line."""
    text = " ".join(str(err).split())
    inner = re.findall(r"\(([^()]+)\)", text)
    return inner[-1] if inner else text


def open_h5(path: str | os.PathLike, what: str = "an HDF5 data file") -> h5py.File:
    """Open an HDF5 file read-only after :func:`regular_file`; a truncated or corrupt file is refused."""
    p = regular_file(path, what)
    with open(p, "rb") as fh:
        head = fh.read(8)
    try:
        is_hdf5 = h5py.is_hdf5(p)
    except OSError:
        is_hdf5 = False
    if not is_hdf5:
        raise DataFormatError(
            f"{p}: not an HDF5 file (first bytes {head.hex(' ') or 'empty'}; an HDF5 file starts with 89 48 44 46); "
            f"expected {what}"
        )
    try:
        return h5py.File(p, "r")
    except OSError as err:
        reason = _reason(err)
        hint = ("the file is incomplete, copy or generate it again" if "truncated" in reason
                else "another process holds it open for writing; wait for it to finish" if "lock" in reason
                else "the file is damaged or not a complete HDF5 file")
        hint = f"; {hint}"
        raise DataFormatError(f"{p}: cannot open the HDF5 file ({reason}){hint}") from None


def node(h5: h5py.File, key: str, *, _depth: int = 0) -> h5py.Group | h5py.Dataset | None:
    """The object at ``key`` reached link by link, or None if some part of ``key`` does not exist.

    Soft links are resolved inside the file (a dangling one is an error); external and
    user-defined links are refused without being followed.
    """
    current: Any = h5["/"]
    walked = ""
    for part in [p for p in key.split("/") if p]:
        if not isinstance(current, h5py.Group):
            raise DataFormatError(f"{h5.filename}: key '{walked}' is a dataset, so it cannot hold '{key}'")
        walked = f"{walked}/{part}".lstrip("/")
        try:
            link = current.get(part, getlink=True)
        except (KeyError, OSError, ValueError):
            link = None
        if link is None:
            return None
        if isinstance(link, h5py.ExternalLink):
            raise DataFormatError(
                f"{h5.filename}: key '{walked}' is an external link to '{link.filename}:{link.path}'; "
                "links out of the file are not followed, copy the data into the file"
            )
        if isinstance(link, h5py.SoftLink):
            if _depth >= _MAX_SOFT_LINKS:
                raise DataFormatError(f"{h5.filename}: key '{walked}' is part of a soft-link loop")
            target = link.path if link.path.startswith("/") else f"{current.name.rstrip('/')}/{link.path}"
            current = node(h5, target, _depth=_depth + 1)
            if current is None:
                raise DataFormatError(
                    f"{h5.filename}: key '{walked}' is a dangling soft link to '{link.path}' (no such object)"
                )
            continue
        if not isinstance(link, h5py.HardLink):
            raise DataFormatError(f"{h5.filename}: key '{walked}' is a {type(link).__name__}; expected a dataset or group")
        try:
            current = current[part]
        except (KeyError, OSError) as err:
            raise DataFormatError(f"{h5.filename}: key '{walked}' cannot be opened ({_reason(err)})") from None
    return current


def subgroups(group: h5py.Group, names: list[str]) -> list[str]:
    """Those of ``names`` (members of ``group``) that are groups, checked as :func:`node` checks them.

    Fast for the 10,000 sample groups of a PDEBench file: one pass over the links, then the object
    type of each hard link without opening it; soft and external links go through :func:`node`.
    """
    kinds: dict[str, int] = {}
    group.id.links.iterate(lambda name, info: kinds.__setitem__(name.decode("utf-8", "replace"), info.type), info=True)
    out = []
    for name in names:
        if kinds.get(name) == h5py.h5l.TYPE_HARD:
            if h5py.h5o.get_info(group.id, name.encode()).type == h5py.h5o.TYPE_GROUP:
                out.append(name)
        elif isinstance(node(group.file, f"{group.name.rstrip('/')}/{name}"), h5py.Group):
            out.append(name)
    return out


def dataset(
    h5: h5py.File, key: str, *, kinds: str = "fiu", ndim: int | tuple[int, ...] | None = None, expected: str = ""
) -> h5py.Dataset:
    """The non-empty dataset at ``key`` with dtype kind in ``kinds`` (and ``ndim`` axes if given).

    Args:
        kinds: accepted numpy dtype kinds, e.g. ``"fiu"`` (real numbers) or ``"iu"`` (integers).
        ndim: accepted number of axes. expected: the layout in words, for messages.
    """
    where = f"{h5.filename}: key '{key}'"
    tail = f"; expected {expected}" if expected else ""
    obj = node(h5, key)
    if obj is None:
        raise DataFormatError(f"{where} is missing{tail}")
    if not isinstance(obj, h5py.Dataset):
        raise DataFormatError(f"{where} is a group, not a dataset{tail}")
    if obj.is_virtual or obj.external:
        raise DataFormatError(f"{where} stores its data in other files (virtual or external storage); "
                              "copy the data into the file")
    if obj.shape is None:
        raise DataFormatError(f"{where} is an empty dataset (no dataspace){tail}")
    kind = obj.dtype.kind
    if kind not in kinds:
        words = " or ".join(KIND_NAMES[k] for k in kinds) + " values"
        raise DataFormatError(f"{where} has dtype {obj.dtype} ({KIND_NAMES.get(kind, kind)}); expected {expected or words}")
    wanted = (ndim,) if isinstance(ndim, int) else ndim
    if wanted is not None and obj.ndim not in wanted:
        raise DataFormatError(f"{where} has shape {obj.shape} ({obj.ndim} axes){tail or f'; expected {wanted[0]} axes'}")
    if obj.size == 0:
        raise DataFormatError(f"{where} is empty (shape {obj.shape}){tail}")
    return obj


def read(ds: h5py.Dataset, index: Any = ()) -> np.ndarray:
    """``ds[index]`` (the whole dataset, or one entry of its first axis) as an array.

    Refused before reading: a selection larger than the machine's memory (a hostile shape).
    A read that fails (corrupt chunk, missing filter) is a DataFormatError naming the key.
    """
    from ..checks import memory_bytes

    shape = ds.shape if index == () else ds.shape[1:]
    nbytes, limit = math.prod(shape) * ds.dtype.itemsize, memory_bytes()
    if limit and nbytes > limit:
        raise DataFormatError(
            f"{ds.file.filename}: key '{ds.name.lstrip('/')}' would need {nbytes / 2**30:.3g} GiB to read "
            f"{'' if index == () else 'one entry of '}shape {ds.shape}, more than this machine's memory"
        )
    try:
        return np.asarray(ds[index])
    except (OSError, ValueError, TypeError) as err:
        raise DataFormatError(f"{ds.file.filename}: key '{ds.name.lstrip('/')}' cannot be read ({_reason(err)})") from None


def attrs(obj: h5py.HLObject) -> dict[str, Any]:
    """The readable attributes of ``obj`` as plain Python values (one that cannot be decoded is skipped)."""
    out: dict[str, Any] = {}
    for name in list(obj.attrs.keys()):
        try:
            value = obj.attrs[name]
        except (OSError, TypeError, ValueError, KeyError):
            continue
        out[name] = _plain(value)
    return out


def _plain(value: Any) -> Any:
    """HDF5 attribute -> JSON-friendly Python value."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.dtype.kind in "OSU" else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in its folder, then ``os.replace``.

    Refused before anything is created when the folder has less free space than ``data`` needs;
    a write that still fails (quota, a disk filled meanwhile) removes the temp file and is one
    :class:`SciPruneError` line. Writers build files in memory first (HDF5 through
    ``h5py.File(io.BytesIO())``) so that no library ever writes to a full disk itself.
    """
    free = shutil.disk_usage(path.parent).free
    if len(data) > free:
        raise SciPruneError(
            f"{path}: not enough disk space: the file needs {bytes_text(len(data))}, {path.parent} has {bytes_text(free)} free"
        )
    try:
        write_bytes_atomic(path, data)
    except OSError as err:
        raise SciPruneError(f"{path}: cannot write the file ({err.strerror or err}); nothing was written") from None
