"""User-facing error types.

Every error a user can cause (bad file, bad option, bad case file) is raised as a
:class:`SciPruneError` subclass with a message that names the file, the key and what was
expected. The CLI prints such errors as one line and exits with code 2.
"""

from __future__ import annotations

__all__ = ["SciPruneError", "DataFormatError", "ConfigError"]


class SciPruneError(ValueError):
    """A mistake in user input: the message says what was expected and how to fix it.

    The message is always one line (a value shown with ``repr``, such as a tensor, may span lines: its
    whitespace is collapsed) of at most :data:`MAX_MESSAGE` characters (the middle of a longer one is
    cut)."""

    def __init__(self, message: object = "", *args: object) -> None:
        text = " ".join(str(message).split())
        if len(text) > MAX_MESSAGE:
            half = MAX_MESSAGE // 2 - 3
            text = f"{text[:half]} ... {text[-half:]}"
        super().__init__(text, *args)


#: The longest message a SciPruneError carries.
MAX_MESSAGE = 2000


class DataFormatError(SciPruneError):
    """A data file that is missing, unreadable or not in the expected layout."""


class ConfigError(SciPruneError):
    """A case file or option with an unknown key or an invalid value."""
