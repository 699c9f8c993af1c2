"""User-facing error types.

Every error a user can cause (bad file, bad option, bad case file) is raised as a
:class:`SciPruneError` subclass with a message that names the file, the key and what was
expected. The CLI prints such errors as one line and exits with code 2.
"""

from __future__ import annotations

__all__ = ["SciPruneError", "DataFormatError", "ConfigError"]


class SciPruneError(ValueError):
    """A mistake in user input: the message says what was expected and how to fix it."""


class DataFormatError(SciPruneError):
    """A data file that is missing, unreadable or not in the expected layout."""


class ConfigError(SciPruneError):
    """A case file or option with an unknown key or an invalid value."""
