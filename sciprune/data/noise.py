"""Seeded noise laws for regression targets, recorded with the data they made.

* ``uniform``: ``y + d``, ``d ~ U(-a, a)`` (the elimination-compensation paper's law, a = 0.005);
  variance ``a**2 / 3``.
* ``gaussian``: ``y + d``, ``d ~ N(0, a**2)``.
* ``relative-gaussian``: ``y * (1 + a * z)``, ``z ~ N(0, 1)``; noise proportional to the value.
* ``none``: ``y`` unchanged (level must be 0).

Draws come from ``np.random.default_rng(seed)`` in float64, one per element in C order, so the
same seed and shape give the same noise on every platform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import SciPruneError

__all__ = ["NoiseModel", "NOISE_KINDS"]

NOISE_KINDS = ("none", "uniform", "gaussian", "relative-gaussian")


@dataclass(frozen=True)
class NoiseModel:
    """A noise law: ``kind`` (one of :data:`NOISE_KINDS`) and ``level`` (a >= 0, see module doc)."""

    kind: str = "none"
    level: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in NOISE_KINDS:
            raise SciPruneError(
                f"noise kind must be one of {', '.join(repr(k) for k in NOISE_KINDS)}, got {self.kind!r}"
            )
        try:
            level = float(self.level)
        except (TypeError, ValueError):
            raise SciPruneError(f"noise level must be a non-negative finite number, got {self.level!r}") from None
        if not math.isfinite(level) or level < 0:
            raise SciPruneError(f"noise level must be a non-negative finite number, got {self.level!r}")
        if self.kind == "none" and level != 0:
            raise SciPruneError(
                f"noise level must be 0 for kind 'none', got {level}; use kind 'uniform', 'gaussian' "
                "or 'relative-gaussian' to add noise"
            )
        object.__setattr__(self, "level", level)

    @classmethod
    def parse(cls, text: str) -> "NoiseModel":
        """Parse ``"kind:level"`` (e.g. ``"uniform:0.005"``) or ``"none"``."""
        kind, sep, level = str(text).strip().partition(":")
        if not sep:
            return cls(kind, 0.0)
        try:
            value = float(level)
        except ValueError:
            raise SciPruneError(f"noise must look like 'uniform:0.005', got {text!r}") from None
        return cls(kind, value)

    def apply(self, y: np.ndarray, *, seed: int) -> np.ndarray:
        """Return a noisy copy of ``y``.

        Args:
            y: clean values, any shape. Floating arrays keep their dtype; others become float64.
            seed: seed for ``np.random.default_rng``.

        Returns:
            Array of the shape of ``y``; ``y`` itself is not modified.

        Raises:
            SciPruneError: ``y`` is not real-valued or holds NaN/inf, or the noise makes some
                values overflow (not finite in float64 or in ``y``'s dtype), naming the level.
        """
        y = np.asarray(y)
        if y.dtype.kind not in "fiu":
            raise SciPruneError(f"noise can be added to real numbers only, got values of dtype {y.dtype}")
        out_dtype = y.dtype if np.issubdtype(y.dtype, np.floating) else np.float64
        y64 = y.astype(np.float64)
        if not np.all(np.isfinite(y64)):
            raise SciPruneError(f"the clean values contain {int((~np.isfinite(y64)).sum())} NaN/inf entries; noise cannot be added")
        if self.kind == "none" or self.level == 0:
            return y64.astype(out_dtype)
        rng = np.random.default_rng(seed)
        with np.errstate(over="ignore", invalid="ignore"):
            try:
                if self.kind == "uniform":
                    noisy = y64 + rng.uniform(-self.level, self.level, size=y.shape)
                elif self.kind == "gaussian":
                    noisy = y64 + self.level * rng.standard_normal(size=y.shape)
                else:  # relative-gaussian
                    noisy = y64 * (1.0 + self.level * rng.standard_normal(size=y.shape))
            except OverflowError:  # the width 2a of U(-a, a) is beyond float64
                noisy = np.full(y.shape, np.inf)
            out = noisy.astype(out_dtype)
        bad = int(np.count_nonzero(~np.isfinite(out)))
        if bad:
            raise SciPruneError(
                f"noise level {self.level:g} ({self.kind}: {self.describe()}) makes {bad} of {out.size} noisy "
                f"values overflow {np.dtype(out_dtype).name} (NaN/inf); use a much smaller noise level"
            )
        return out

    @property
    def std(self) -> float | None:
        """Standard deviation of additive noise (None for relative noise)."""
        if self.kind == "uniform":
            return self.level / math.sqrt(3.0)
        if self.kind == "gaussian":
            return self.level
        if self.kind == "none":
            return 0.0
        return None

    def describe(self) -> str:
        """One-line formula, e.g. ``"y + U(-0.005, 0.005)"``."""
        a = f"{self.level:g}"
        return {
            "none": "y",
            "uniform": f"y + U(-{a}, {a})",
            "gaussian": f"y + N(0, {a}^2)",
            "relative-gaussian": f"y * (1 + {a} N(0, 1))",
        }[self.kind]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "level": self.level}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NoiseModel":
        if not isinstance(d, dict) or "kind" not in d:
            raise SciPruneError(f"noise must be a mapping with keys 'kind' and 'level', got {d!r}")
        unknown = set(d) - {"kind", "level"}
        if unknown:
            raise SciPruneError(f"noise has unknown keys {sorted(unknown)}; expected 'kind' and 'level'")
        return cls(d["kind"], d.get("level", 0.0))
