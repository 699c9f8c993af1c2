"""Where results may be written: one check of output paths and names for every command that writes.

Every writer calls :func:`prepare_output` before it creates anything, so an output that cannot be
written (parent that is a file, folder without write permission) is refused with one line naming the
path, before any work is done and before any temporary file exists. Missing parent folders are
created, as ``sciprune run`` has always done for its output folder. :func:`child` joins names taken
from case files (architectures, methods, labels) under an output folder and refuses any that would
leave it; :func:`check_name` is the load-time check of such names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import SciPruneError

__all__ = ["prepare_output", "child", "check_name", "SAFE_NAME"]

#: Names that become parts of file names: letters, digits, and ``. _ + - =``; not starting with a dot.
SAFE_NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]{0,127}")


def check_name(name: object, what: str) -> str:
    """``name`` if it is safe as part of a file name, else a :class:`SciPruneError` naming ``what``."""
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise SciPruneError(
            f"{what} must be 1-128 characters of letters, digits and . _ + - = (not starting with '.'), "
            f"got {name!r}"
        )
    return name


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


def prepare_output(path: str | os.PathLike, *, is_dir: bool = False, what: str = "output") -> Path:
    """Check that ``path`` (a file, or a folder if ``is_dir``) can be written and create its missing
    parent folders (and the folder itself if ``is_dir``). Raises :class:`SciPruneError` when a parent
    is a file, a folder is not writable, or ``path`` is a folder where a file is expected (or the
    reverse)."""
    if path is None or str(path) == "":
        raise SciPruneError(f"{what}: an output path is required, got {path!r}")
    if "\x00" in str(path):
        raise SciPruneError(f"{what}: the path {str(path)!r} contains a NUL byte")
    p = Path(path)
    if p.exists():
        if is_dir and not p.is_dir():
            raise SciPruneError(f"{what}: {p} exists and is not a folder; choose another output folder")
        if not is_dir and p.is_dir() and p.suffix != ".sciprune":
            raise SciPruneError(f"{what}: {p} is a folder, expected a file path")
    existing = _first_existing(p if is_dir else p.parent)
    if not existing.is_dir():
        raise SciPruneError(f"{what}: {existing} is not a folder, so {p} cannot be created there")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SciPruneError(f"{what}: the folder {existing} is not writable (permission denied)")
    try:
        (p if is_dir else p.parent).mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SciPruneError(f"{what}: cannot create the folder for {p}: {err.strerror or err}") from None
    return p


def child(root: str | os.PathLike, *parts: str) -> Path:
    """``root / parts...``, refused if the result would not lie under ``root`` (``..``, absolute
    parts, links out of the folder)."""
    root_p = Path(root)
    path = root_p.joinpath(*parts)
    base = os.path.realpath(root_p)
    real = os.path.realpath(path)
    if os.path.commonpath([base, real]) != base or any(Path(x).is_absolute() for x in parts):
        raise SciPruneError(f"refusing to write {path}: it is not under the output folder {root_p}")
    return path
