"""What every command module shares: the user-error type (one line, exit code 2) and the group class
that turns the library's SciPruneError into it. Kept apart from ``cli`` so that command modules can
import it without importing ``cli`` (which imports them)."""

from __future__ import annotations

import click

from .errors import SciPruneError

__all__ = ["UserError", "Group"]


class UserError(click.ClickException):
    """A user mistake: printed as one line, exit code 2."""

    exit_code = 2


class Group(click.Group):
    """A click group whose commands report a SciPruneError as a UserError."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SciPruneError as err:
            raise UserError(str(err)) from None
