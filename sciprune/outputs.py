"""Where results may be written: one check of output paths and names for every command that writes.

Every writer calls :func:`prepare_output` before it creates anything, so an output that cannot be
written (parent that is a file, folder without write permission) is refused with one line naming the
path, before any work is done and before any temporary file exists. Missing parent folders are
created, as ``sciprune run`` has always done for its output folder. :func:`child` joins names taken
from case files (architectures, methods, labels) under an output folder and refuses any that would
leave it; :func:`check_name` is the load-time check of such names. :class:`atomic_path` and
:func:`write_bytes_atomic` are the one way files are written: a temporary file beside the target,
fsync, rename; on any error the temporary file is removed and the target is as it was.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import SciPruneError

__all__ = ["prepare_output", "output_or_nothing", "first_existing", "child", "check_name", "SAFE_NAME", "atomic_path", "write_bytes_atomic", "fsync_dir"]

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


def first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (a dangling link counts as existing)."""
    p = path
    while not p.exists() and not p.is_symlink() and p != p.parent:
        p = p.parent
    return p


@contextlib.contextmanager
def output_or_nothing(path: str | os.PathLike, *, is_dir: bool = False, what: str = "output") -> Iterator[Path]:
    """:func:`prepare_output`, then the work in the ``with`` block; if the work raises, the folders
    ``prepare_output`` created are removed again (deepest first, only while empty), so a command that
    fails leaves the disk as it was."""
    p = Path(path)
    created, q = [], p if is_dir else p.parent
    while not q.exists() and not q.is_symlink() and q != q.parent:
        created.append(q)
        q = q.parent
    out = prepare_output(path, is_dir=is_dir, what=what)
    try:
        yield out
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:
                break
        raise


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
    existing = first_existing(p if is_dir else p.parent)
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (where the file system syncs folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs folders
    finally:
        os.close(fd)


def _named(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` (the destination, not the temporary file) so the CLI line says where."""
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror or str(err), str(path))


class atomic_path:
    """Context manager giving a temporary path beside ``path``; renamed onto ``path`` on success.

    ``suffix`` is appended to the temporary name (``.png`` lets a writer infer the format). Any error,
    in the body or while syncing and renaming, removes the temporary file and leaves ``path`` as it
    was. The result gets the permissions of a newly created file (``0666 & ~umask``).
    """

    def __init__(self, path: str | Path, *, suffix: str = "") -> None:
        self.path = Path(path)
        self.suffix = suffix

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp" + self.suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        try:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)
        except BaseException as err:
            self.tmp.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise _named(err, self.path) from None
            raise
        fsync_dir(self.path.parent)


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); no temporary file is left
    on any error (a full disk raises :class:`OSError` naming ``path``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
        except OSError as err:
            raise _named(err, path) from None
    return path
