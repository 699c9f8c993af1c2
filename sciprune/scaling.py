"""Affine scaling of inputs and outputs, recorded so a saved surrogate can undo it.

``scaled = (physical - shift) / scale`` feature-wise; ``physical = scaled * scale + shift``.
Every shift and scale is finite and every scale non-zero: a :class:`Scaling` with NaN or inf (from
a corrupt ``model.json`` or from values that overflow float64) is refused with a
:class:`~sciprune.errors.SciPruneError`, never used to predict NaN.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import SciPruneError

__all__ = ["Scaling"]


@dataclass(frozen=True)
class Scaling:
    """Feature-wise affine map. ``shift`` and ``scale`` are 1-D float64 arrays of one length."""

    shift: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        shift, scale = _vector(self.shift, "shift"), _vector(self.scale, "scale")
        if shift.shape != scale.shape or shift.ndim != 1 or shift.size == 0:
            raise SciPruneError(
                f"Scaling shift and scale must be 1-D of one non-zero length, got shapes {shift.shape} and {scale.shape}"
            )
        if not np.all(np.isfinite(shift)):
            raise SciPruneError(f"Scaling shift must be finite, got {_show(shift)}")
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise SciPruneError(f"Scaling scale must be finite and non-zero, got {_show(scale)}")
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "scale", scale)

    @classmethod
    def identity(cls, n: int) -> "Scaling":
        return cls(np.zeros(n), np.ones(n))

    @classmethod
    def to_unit_interval(cls, values: np.ndarray) -> "Scaling":
        """Map each column of ``values`` (N, F) onto [-1, 1].

        A constant column (zero range) gets scale 1, so it maps to 0. Values near the float64
        limit are handled without overflow. Raises SciPruneError for no rows or NaN/inf values.
        """
        values = _columns(values, "to_unit_interval")
        lo, hi = values.min(axis=0), values.max(axis=0)
        with np.errstate(over="ignore", invalid="ignore"):
            half = (hi - lo) / 2
            half = np.where(np.isfinite(half), half, hi / 2 - lo / 2)  # a range beyond float64
        half[half == 0] = 1.0
        _check_finite("the half-range", half, values)
        return cls(lo + half, half)

    @classmethod
    def standardize(cls, values: np.ndarray) -> "Scaling":
        """Zero mean, unit standard deviation per column of ``values`` (N, F).

        A constant column (standard deviation 0) gets scale 1, so it maps to 0. Values whose
        squares overflow float64 (above about 1e154) are divided by their largest magnitude first,
        so every finite column has a finite mean and standard deviation. Raises SciPruneError for
        no rows or NaN/inf values.
        """
        values = _columns(values, "standardize")
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = values.mean(axis=0), values.std(axis=0)
            if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std))):
                top = np.max(np.abs(values), axis=0)
                top[top == 0] = 1.0
                mean, std = top * (values / top).mean(axis=0), top * (values / top).std(axis=0)
        _check_finite("the mean", mean, values)
        _check_finite("the standard deviation", std, values)
        std[std == 0] = 1.0
        return cls(mean, std)

    @property
    def size(self) -> int:
        return int(self.shift.shape[0])

    def forward(self, physical):
        """Physical units -> network units. Works on numpy arrays and torch tensors (..., F)."""
        return (physical - _like(self.shift, physical)) / _like(self.scale, physical)

    def inverse(self, scaled):
        """Network units -> physical units."""
        return scaled * _like(self.scale, scaled) + _like(self.shift, scaled)

    def to_dict(self) -> dict:
        return {"shift": self.shift.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "Scaling":
        """The inverse of :meth:`to_dict`; SciPruneError for anything but ``{"shift": [...], "scale": [...]}``."""
        if not isinstance(d, dict) or set(d) != {"shift", "scale"}:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise SciPruneError(f"a scaling must be a mapping with keys 'shift' and 'scale' (lists of numbers), got {got}")
        return cls(d["shift"], d["scale"])


def _vector(value, name: str) -> np.ndarray:
    """``value`` as a float64 vector; SciPruneError for strings, nested lists, booleans and the like."""
    arr = np.asarray(value) if not isinstance(value, (str, bytes)) else np.asarray([value])
    if arr.dtype.kind not in "fiu" or arr.ndim > 1:
        raise SciPruneError(f"Scaling {name} must be a number or a list of numbers, got {_short_repr(value)}")
    return np.atleast_1d(arr.astype(np.float64))


def _columns(values, what: str) -> np.ndarray:
    """``values`` as finite float64 (N, F) with N >= 1."""
    values = np.asarray(values, dtype=np.float64)
    values = values.reshape(1, 1) if values.ndim == 0 else values.reshape(values.shape[0], -1) if values.size else values
    if values.shape[0] == 0 or values.size == 0:
        raise SciPruneError(f"Scaling.{what} needs at least one row of values, got shape {values.shape}")
    bad = ~np.isfinite(values)
    if bad.any():
        raise SciPruneError(f"Scaling.{what}: the values contain {int(bad.sum())} NaN/inf entries of {values.size}")
    return values


def _check_finite(name: str, stat: np.ndarray, values: np.ndarray) -> None:
    if not np.all(np.isfinite(stat)):
        col = int(np.flatnonzero(~np.isfinite(stat))[0])
        top = float(np.max(np.abs(values[:, col])))
        raise SciPruneError(
            f"{name} of column {col} overflows float64 (values up to {top:.3g} in magnitude); "
            "the data cannot be scaled"
        )


def _show(a: np.ndarray) -> str:
    return str(a.tolist()) if a.size <= 8 else f"{a.size} values, {int((~np.isfinite(a)).sum())} not finite"


def _short_repr(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _like(a: np.ndarray, ref):
    if isinstance(ref, np.ndarray):
        return a.astype(ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64)
    import torch

    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
    return a
