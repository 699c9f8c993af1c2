"""The harness of the malformed-input suites (``tests/test_malformed_*.py``), imported as ``malformed``.

Each case drives a command in-process through click's ``CliRunner`` (or calls a library entry point)
and asserts the promise of the boundary: exit code 2 (or :class:`~sciprune.errors.SciPruneError`),
one line ``Error: ...`` that names the offending file, key or value, no traceback, and the watched
folders exactly as before (no partial or temporary file).
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from sciprune.cli import cli
from sciprune.errors import SciPruneError

__all__ = ["snapshot", "invoke", "assert_user_error", "assert_raises_user_error", "tmpfs"]


def snapshot(*folders: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """Every entry under ``folders`` (hidden ones included) with its size and modification time."""
    out: dict[str, tuple[int, int]] = {}
    for folder in folders:
        root = Path(folder)
        if not root.exists():
            out[str(root)] = (-1, -1)
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                try:
                    st = p.lstat()
                except OSError:
                    continue
                out[str(p)] = (st.st_size if not p.is_dir() else 0, st.st_mtime_ns if not p.is_dir() else 0)
    return out


def invoke(args: list[str], *, input: str | None = None):
    """Run ``sciprune ARGS`` in this process; exceptions are caught by the runner."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=True)


def assert_user_error(result, *needles: str, watch: tuple = (), before: dict | None = None) -> str:
    """Exit code 2, one ``Error:`` line containing every needle, no traceback, ``watch`` unchanged.

    ``before`` is :func:`snapshot` of ``watch`` taken before the command ran.
    """
    out = result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"raised {type(result.exception).__name__}: {result.exception}\n{out}")
    assert result.exit_code == 2, f"exit code {result.exit_code}, expected 2; output:\n{out}"
    assert "Traceback" not in out, out
    lines = [ln for ln in out.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, f"expected one 'Error:' line, got:\n{out}"
    line = lines[0]
    for needle in needles:
        assert needle.lower() in line.lower(), f"{needle!r} not in the error line: {line}"
    if before is not None:
        after = snapshot(*watch)
        assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))}"
    return line


def assert_raises_user_error(fn, *needles: str) -> str:
    """``fn()`` raises :class:`SciPruneError` whose one-line message contains every needle."""
    with pytest.raises(SciPruneError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg.strip(), f"message spans lines: {msg!r}"
    for needle in needles:
        assert needle.lower() in msg.lower(), f"{needle!r} not in: {msg}"
    return msg


@contextmanager
def tmpfs(folder: str | os.PathLike, options: str = "size=64k"):
    """A small tmpfs mounted on ``folder`` (made if missing) for the duration: a full disk, or with
    ``ro`` a read-only one. Mounting needs root; the test is skipped where it fails."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)

