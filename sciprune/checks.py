"""Bounds and checks of plain values shared by every boundary (case files, options, library calls).

Kept free of heavy imports (numpy only), so that the CLI's option types and the data generator's
worker processes can use them without importing torch. Each check returns the value in its plain
Python type or raises a one-line :class:`~sciprune.errors.SciPruneError` naming what was expected.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import SciPruneError

__all__ = ["SEED_LIMIT", "MAX_EPOCHS", "MAX_WORKERS", "check_int", "check_seed", "check_choice", "check_positive_int",
           "memory_bytes", "bytes_text"]

#: Seeds are integers in [0, SEED_LIMIT): what numpy's (legacy ``np.random.seed`` included) and torch's
#: generators both accept.
SEED_LIMIT = 2**32
#: Upper bound of every epoch count (``epochs``, ``step_size``, ``patience``, ``eval_every``). The
#: shipped studies use at most 2000 epochs; 10^7 leaves over three orders of magnitude of headroom (12
#: days of training at 0.1 s an epoch) while refusing typos (``epochs = 10**18``) that would run for ever.
MAX_EPOCHS = 10**7
#: Most worker processes of the data generator (``[data.generate] workers``, ``--workers``).
MAX_WORKERS = 4096


def check_int(value, what: str, *, lo: int, hi: int | None = None, none_ok: bool = False) -> int | None:
    """``value`` as an int in [lo, hi] (``hi`` None: no upper bound; None itself when ``none_ok``), else a
    one-line :class:`SciPruneError` naming ``what``."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo or (hi is not None and value > hi):
        span = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise SciPruneError(f"{what} must be an integer {span}{' or None' if none_ok else ''}, got {value!r}")
    return int(value)


def check_seed(seed, what: str = "seed") -> int:
    """``seed`` as an int if it is an integer in [0, 2**32), else a :class:`SciPruneError`."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < SEED_LIMIT:
        raise SciPruneError(f"{what} must be an integer in [0, 2**32), got {seed!r}")
    return int(seed)


def check_choice(value, choices, what: str) -> str:
    """``value`` if it is one of the names ``choices``, else a :class:`SciPruneError` (any non-string,
    an array included, is refused without being compared)."""
    if not isinstance(value, str) or value not in choices:
        raise SciPruneError(f"{what} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_positive_int(value, what: str, *, none_ok: bool = False) -> int | None:
    """``value`` as a positive int (or None when ``none_ok``), else a :class:`SciPruneError`."""
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = " or None" if none_ok else ""
        raise SciPruneError(f"{what} must be a positive integer{extra}, got {value!r}")
    return int(value)


def check_number(value, what: str, *, positive: bool = False, meaning: str = "") -> float:
    """``value`` as a float if it is a finite real >= 0 (> 0 with ``positive``), else a one-line
    :class:`SciPruneError` naming ``what`` (followed by ``meaning``, e.g. " (the lambda of ...)")."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SciPruneError(f"{what} must be a finite number {'> 0' if positive else '>= 0'}{meaning}, got {value!r}")
    return float(value)


def memory_bytes() -> int:
    """Physical memory of this machine in bytes (0 where the platform does not say): the bound every
    size check (networks, grids, reads, solves) compares its estimate with."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def bytes_text(n: float) -> str:
    """Bytes in words: 3 significant digits in the largest binary unit below them."""
    units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    k = 0
    while n >= 1024 and k < len(units) - 1:
        n, k = n / 1024, k + 1
    return f"{n:.3g} {units[k]}"

