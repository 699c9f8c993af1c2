"""Affine scaling of inputs and outputs, recorded so a saved surrogate can undo it.

``scaled = (physical - shift) / scale`` feature-wise; ``physical = scaled * scale + shift``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Scaling"]


@dataclass(frozen=True)
class Scaling:
    """Feature-wise affine map. ``shift`` and ``scale`` are 1-D float64 arrays of one length."""

    shift: np.ndarray
    scale: np.ndarray

    def __post_init__(self) -> None:
        shift = np.atleast_1d(np.asarray(self.shift, dtype=np.float64))
        scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float64))
        if shift.shape != scale.shape or shift.ndim != 1:
            raise ValueError(f"Scaling shift and scale must be 1-D of one length, got {shift.shape} and {scale.shape}")
        if not np.all(np.isfinite(scale)) or np.any(scale == 0):
            raise ValueError(f"Scaling scale must be finite and non-zero, got {scale.tolist()}")
        object.__setattr__(self, "shift", shift)
        object.__setattr__(self, "scale", scale)

    @classmethod
    def identity(cls, n: int) -> "Scaling":
        return cls(np.zeros(n), np.ones(n))

    @classmethod
    def to_unit_interval(cls, values: np.ndarray) -> "Scaling":
        """Map each column of ``values`` (N, F) onto [-1, 1]."""
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        lo, hi = values.min(axis=0), values.max(axis=0)
        half = (hi - lo) / 2
        half[half == 0] = 1.0
        return cls(lo + half, half)

    @classmethod
    def standardize(cls, values: np.ndarray) -> "Scaling":
        """Zero mean, unit standard deviation per column of ``values`` (N, F)."""
        values = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        std = values.std(axis=0)
        std[std == 0] = 1.0
        return cls(values.mean(axis=0), std)

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
        return cls(np.asarray(d["shift"]), np.asarray(d["scale"]))


def _like(a: np.ndarray, ref):
    if isinstance(ref, np.ndarray):
        return a.astype(ref.dtype if np.issubdtype(ref.dtype, np.floating) else np.float64)
    import torch

    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(a, dtype=ref.dtype, device=ref.device)
    return a
