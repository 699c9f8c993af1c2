"""One writer per study output folder, and one study per folder.

``sciprune run`` and ``sciprune sweep`` open their output folder with :func:`open_study`, which

1. checks, before anything is created, that the folder's own entries (``blocks/``, ``sweep/``,
   ``models/``, ``results.nc``, the marker) have the expected kind (folder or file);
2. takes an exclusive lock on ``<output>/.sciprune.lock`` (the ``filelock`` library: ``flock`` on
   POSIX, released by the operating system when the process dies, so a killed run never leaves a
   stale lock). A second process on the same folder exits with one line naming the folder and the
   holder (pid, host, command, start time, from ``.sciprune.lock.holder``), or, with ``wait=True``
   (``--wait``), waits for the first to finish;
3. holding the lock, deletes the temporary files (``.*.tmp``, ``.*.tmp.*``, and a surrogate's
   ``.*.tmp-*`` folders) that interrupted writes left in the study's folders: while the lock is held
   no other process writes there, so every such file is an orphan. Nothing is deleted without the lock;
4. records which study the folder holds in ``<output>/.sciprune-study.json`` (case name and case hash).

Which cases may share a folder. A folder holds the results of one study, named by the case's
``name``. A case with *another* name pointed at a folder that holds a study is refused (exit 2, one
line): two different studies never mix silently; choose another output folder, or delete the old one.
The *same* name with changed settings (edited ratios, epochs, ...) is the same study edited: it is
allowed, says so in one line, and every stored result made with other settings is recomputed or
ignored (``run`` recomputes blocks whose case hash differs and says which; ``sweep`` keys every run on
its settings and data, so only runs whose settings and data match are reused). A folder without a
marker (made by an older sciprune) is adopted by the first case that opens it.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import SciPruneError
from .results import TEMP_GLOBS, write_bytes_atomic

__all__ = ["open_study", "StudyInUse", "LOCK_NAME", "HOLDER_NAME", "MARKER_NAME", "HASH_CACHE_NAME",
           "remove_orphans", "read_marker"]

LOCK_NAME = ".sciprune.lock"
HOLDER_NAME = ".sciprune.lock.holder"
MARKER_NAME = ".sciprune-study.json"
HASH_CACHE_NAME = ".sciprune-data-hashes.json"

#: Entries of an output folder that sciprune writes, and whether each is a folder.
LAYOUT = {"blocks": True, "models": True, "sweep": True, "sweep/runs": True, "sweep/models": True,
          "results.nc": False, MARKER_NAME: False, LOCK_NAME: False, HOLDER_NAME: False, HASH_CACHE_NAME: False}

#: Folders (relative to the output) where interrupted atomic writes may leave temporary files.
TEMP_FOLDERS = (".", "blocks", "models", "sweep/runs", "sweep/models")


class StudyInUse(SciPruneError):
    """Another process holds the output folder's lock."""


def check_layout(out: Path) -> None:
    """Each entry sciprune writes under ``out`` is absent or of the right kind (folder or file)."""
    for rel, is_dir in LAYOUT.items():
        p = out / rel
        if p.is_symlink() and not p.exists():
            raise SciPruneError(f"output: {p} is a dangling link; remove it")
        if not p.exists():
            continue
        if is_dir and not p.is_dir():
            raise SciPruneError(f"output: {p} exists and is not a folder; move it away or choose another output folder")
        if not is_dir and not p.is_file():
            raise SciPruneError(f"output: {p} exists and is not a regular file; move it away or choose another output folder")


def read_marker(out: Path) -> tuple[dict | None, str | None]:
    """The study marker of ``out`` as (record, problem): (None, None) if there is none, (None, why) if
    it is damaged."""
    p = out / MARKER_NAME
    if not p.exists():
        return None, None
    try:
        rec = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return None, f"not readable JSON: {type(err).__name__}"
    if not (isinstance(rec, dict) and isinstance(rec.get("name"), str) and isinstance(rec.get("case_hash"), str)):
        return None, "expected an object with string keys 'name' and 'case_hash'"
    return rec, None


def _check_identity(out: Path, name: str, case_hash: str, echo: Callable[[str], None] | None) -> None:
    """Refuse another study's folder; say so (through ``echo``) when the same study was edited."""
    rec, problem = read_marker(out)
    if problem is not None:
        if echo is not None:
            echo(f"{out / MARKER_NAME}: damaged ({problem}); replacing it")
        return
    if rec is None:
        return
    if rec["name"] != name:
        raise SciPruneError(
            f"output: {out} holds the results of the case {rec['name']!r}, not {name!r}; choose another output "
            f"folder (--output) or delete {out} to start afresh")
    if rec["case_hash"] != case_hash and echo is not None:
        echo(f"case {name!r} changed since {out} was last written (case hash {rec['case_hash']} -> {case_hash}); "
             "results made with the old settings are recomputed, not reused")


def _holder(out: Path) -> str:
    try:
        h = json.loads((out / HOLDER_NAME).read_text(encoding="utf-8"))
        return (f"pid {int(h['pid'])} on {h['host']} ({h['command']}, since "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(float(h['since'])))})")
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError, OverflowError):
        return "another process"


def remove_orphans(out: Path) -> int:
    """Delete the temporary files of interrupted writes under ``out``; call only while holding the lock.
    Returns how many were removed."""
    n = 0
    for rel in TEMP_FOLDERS:
        folder = out / rel
        if not folder.is_dir():
            continue
        for pattern in TEMP_GLOBS:
            for p in folder.glob(pattern):
                if p.is_file() and not p.is_symlink():
                    p.unlink(missing_ok=True)
                    n += 1
        if rel == "models":
            for p in folder.glob(".*.tmp-*"):  # a surrogate's temporary folder
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                    n += 1
    return n


@contextmanager
def open_study(out: str | os.PathLike, *, name: str, case_hash: str, command: str, wait: bool = False,
               echo: Callable[[str], None] = print) -> Iterator[Path]:
    """Hold ``out`` for the study ``name`` (see the module docstring); yields ``out`` as a Path.

    Raises :class:`StudyInUse` when another process holds the folder and ``wait`` is false, and
    :class:`SciPruneError` when the folder holds another study or an entry of the wrong kind.
    """
    from filelock import FileLock, Timeout

    out = Path(out)
    check_layout(out)
    _check_identity(out, name, case_hash, echo=None)  # before anything is created
    lock = FileLock(str(out / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        holder = _holder(out)
        if not wait:
            raise StudyInUse(f"output: {out} is in use by {holder}; wait for it to finish, pass --wait, "
                             "or choose another output folder") from None
        echo(f"waiting for {holder} to finish with {out}")
        lock.acquire()
    try:
        check_layout(out)
        _check_identity(out, name, case_hash, echo=echo)
        who = {"pid": os.getpid(), "host": socket.gethostname(), "user": _user(), "since": time.time(),
               "command": f"sciprune {command}"}
        write_bytes_atomic(out / HOLDER_NAME, json.dumps(who).encode())
        removed = remove_orphans(out)
        if removed:
            echo(f"removed {removed} temporary file(s) left in {out} by an interrupted run")
        marker = out / MARKER_NAME
        had_marker = marker.exists()
        write_bytes_atomic(marker, json.dumps({"name": name, "case_hash": case_hash, "command": command},
                                              sort_keys=True).encode())
        try:
            yield out
        except BaseException:
            if not had_marker and not _has_results(out):
                marker.unlink(missing_ok=True)  # a study that stored nothing claims no folder
            raise
    finally:
        try:
            (out / HOLDER_NAME).unlink(missing_ok=True)
        finally:
            lock.release()


def _has_results(out: Path) -> bool:
    return any((out / rel).exists() for rel in ("blocks", "sweep", "results.nc", "models"))


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment
        return ""
