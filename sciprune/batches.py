"""Turn the data a user passes (arrays, tensors, a TaskData, an iterable of batches) into batches.

Criteria and training take ``data`` as a tuple ``(X, Y)`` of tensors or numpy arrays, a
:class:`~sciprune.data.TaskData` (its training split is used), or any re-iterable of ``(X, Y)``
batches such as a ``DataLoader``. :func:`as_batches` gives a re-iterable of ``(X, Y)`` tensors on
the requested device and dtype; tuples are kept resident and sliced, never copied per pass.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from .errors import SciPruneError

__all__ = ["Batches", "as_batches", "as_tensor"]


def _all_finite(a: torch.Tensor) -> bool:
    """True when no entry is NaN or infinite.

    A NaN or an infinity makes the sum non-finite, so one reduction (no boolean copy of the data)
    settles the common all-finite case; only a non-finite sum, possibly an overflow of large finite
    values, pays for the element-wise test.
    """
    if a.numel() == 0:
        return True
    if bool(torch.isfinite(a.sum())):  # in the data's dtype: 20x cheaper than a float64 sum on CPU
        return True
    return bool(torch.isfinite(a).all())


def as_tensor(a, *, device=None, dtype=None, name: str = "data") -> torch.Tensor:
    """numpy array or tensor -> tensor; floating data cast to ``dtype``; non-finite values rejected."""
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise SciPruneError(f"{name} must be a tensor or numpy array, got {type(a).__name__}")
    if a.is_floating_point():
        if not _all_finite(a):
            raise SciPruneError(f"{name} contains NaN or infinite values")
        a = a.to(device=device, dtype=dtype)
    else:
        a = a.to(device=device)
    return a


class Batches:
    """A re-iterable of ``(X, Y)`` tensor batches on one device."""

    def __init__(self, source, *, device=None, dtype=None, batch_size: int | None = None) -> None:
        self.device, self.dtype = device, dtype
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._iterable = None
        if isinstance(source, tuple) and len(source) == 2:
            X = as_tensor(source[0], device=device, dtype=dtype, name="X")
            Y = as_tensor(source[1], device=device, dtype=dtype, name="Y")
            if X.shape[0] != Y.shape[0]:
                raise SciPruneError(f"X and Y must have the same number of rows, got {X.shape[0]} and {Y.shape[0]}")
            if X.ndim == 1:
                X = X[:, None]
            self._tensors = (X, Y)
            self.batch_size = int(batch_size) if batch_size else X.shape[0]
            if self.batch_size < 1:
                raise SciPruneError(f"batch_size must be a positive integer, got {batch_size}")
        elif isinstance(source, Iterable) and not isinstance(source, (str, bytes, torch.Tensor, np.ndarray)):
            self._iterable = source
        else:
            raise SciPruneError(
                f"data must be a tuple (X, Y) of tensors or arrays, a TaskData, or an iterable of (X, Y) batches; got {type(source).__name__}"
            )

    @property
    def resident(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The whole ``(X, Y)`` when the data was given as tensors, else None."""
        return self._tensors

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self._tensors is not None:
            X, Y = self._tensors
            for start in range(0, X.shape[0], self.batch_size):
                yield X[start : start + self.batch_size], Y[start : start + self.batch_size]
            return
        n = 0
        for batch in self._iterable:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise SciPruneError("each batch of an iterable must be a pair (X, Y)")
            yield (
                as_tensor(batch[0], device=self.device, dtype=self.dtype, name="X"),
                as_tensor(batch[1], device=self.device, dtype=self.dtype, name="Y"),
            )
            n += 1
        if n == 0:
            raise SciPruneError("the data iterable yielded no batches")


def as_batches(data, *, device=None, dtype=None, batch_size: int | None = None) -> Batches:
    """Normalise ``data`` to :class:`Batches` (see module docstring)."""
    if isinstance(data, Batches):
        return data
    from .data._types import TaskData

    if isinstance(data, TaskData):
        data = (data.X_train, data.Y_train)
    return Batches(data, device=device, dtype=dtype, batch_size=batch_size)
