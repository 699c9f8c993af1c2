"""What every command module shares: the user-error type (one line, exit code 2) and the group class
that turns the library's SciPruneError into it. Kept apart from ``cli`` so that command modules can
import it without importing ``cli`` (which imports them)."""

from __future__ import annotations

import click

from .errors import SciPruneError
from .checks import SEED_LIMIT

__all__ = ["UserError", "Group", "PathArg", "SEED"]

#: The type of every --seed option: integers in [0, 2**32).
SEED = click.IntRange(0, SEED_LIMIT - 1)


class UserError(click.ClickException):
    """A user mistake: printed as one line, exit code 2."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))  # always one line


class Group(click.Group):
    """A click group whose commands report a SciPruneError as a UserError."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SciPruneError as err:
            raise UserError(str(err)) from None
        except OSError as err:  # disk full, permission, I/O error: name the file, no traceback
            raise UserError(_os_error_line(err)) from None


def _os_error_line(err: OSError) -> str:
    """One line for an operating-system error: the file, then what went wrong."""
    where = err.filename if getattr(err, "filename", None) else None
    what = err.strerror or str(err) or type(err).__name__
    line = f"{where}: {what}" if where else what
    return " ".join(str(line).split())


class PathArg(click.Path):
    """``click.Path`` that refuses a NUL byte as one usage error (exit 2); click's own check raises a
    ValueError from ``os.stat`` instead. (A real shell cannot pass NUL, but a program calling the
    command in-process can.)"""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and "\x00" in value:
            self.fail(f"{value!r} contains a NUL byte; a path cannot", param, ctx)
        return super().convert(value, param, ctx)

