"""Turn the data a user passes (arrays, tensors, a TaskData, an iterable of batches) into batches.

Criteria and training take ``data`` as a tuple ``(X, Y)`` of tensors or numpy arrays, a
:class:`~sciprune.data.TaskData` (its training split is used), or any re-iterable of ``(X, Y)``
batches such as a ``DataLoader``. :func:`as_batches` gives a re-iterable of ``(X, Y)`` tensors on
the requested device and dtype; tuples are kept resident and sliced, never copied per pass.

Given the model (``as_batches(..., model=m)``, :func:`check_pair`), the data are checked against it
at the boundary: ``X`` floating and shaped ``(N, F_in)``; ``Y`` floating ``(N, F_out)`` (``(N,)`` is
read as one column when ``F_out == 1``) or integer labels ``(N,)`` in ``[0, F_out)``. The small
validators of plain values are in :mod:`sciprune.checks` (re-exported here).
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch

from .errors import SciPruneError
from .checks import check_positive_int

__all__ = ["Batches", "as_batches", "as_tensor", "check_pair", "model_shapes"]



def model_shapes(model) -> tuple[int, int] | None:
    """(F_in of the first nn.Linear, F_out of the last) of ``model``, or None without Linear layers."""
    lins = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return (lins[0].in_features, lins[-1].out_features) if lins else None


def check_pair(X: torch.Tensor, Y: torch.Tensor, shapes: tuple[int, int] | None,
               names: tuple[str, str] = ("X", "Y")) -> tuple[torch.Tensor, torch.Tensor]:
    """``(X, Y)`` checked for a model taking ``shapes = (F_in, F_out)``; (N,) columns made (N, 1)."""
    nx, ny = names
    if not X.is_floating_point():
        raise SciPruneError(f"{nx} must hold floating-point values, got {X.dtype}; convert it first "
                            "(X.float() or X.astype(np.float32))")
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2 or X.shape[0] == 0:
        raise SciPruneError(f"{nx} must be a non-empty (N, F_in) array, got shape {tuple(X.shape)}")
    if Y.shape[:1] != X.shape[:1]:
        raise SciPruneError(f"{nx} and {ny} must have the same number of rows, got {X.shape[0]} and "
                            f"{Y.shape[0] if Y.ndim else 'a scalar'}")
    f_in, f_out = shapes if shapes is not None else (X.shape[1], None)
    if X.shape[1] != f_in:
        raise SciPruneError(f"{nx} has {X.shape[1]} features (columns) but the model takes F_in={f_in}")
    if Y.is_floating_point():
        if Y.ndim == 1 and f_out in (1, None):
            Y = Y[:, None]
        if Y.ndim != 2 or (f_out is not None and Y.shape[1] != f_out):
            want = f"({X.shape[0]}, {f_out})" if f_out is not None else "(N, F_out)"
            raise SciPruneError(f"{ny} must have shape {want} (one column per model output), got {tuple(Y.shape)}")
    elif Y.dtype in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        if Y.ndim != 1:
            raise SciPruneError(f"integer {ny} are class labels and must have shape ({X.shape[0]},), got {tuple(Y.shape)}")
        lo, hi = int(Y.min()), int(Y.max())
        if f_out is not None and (lo < 0 or hi >= f_out):
            raise SciPruneError(f"class labels in {ny} must lie in [0, {f_out}) (the model has {f_out} outputs), "
                                f"got values in [{lo}, {hi}]")
        Y = Y.long()
    else:
        raise SciPruneError(f"{ny} must hold floating targets or integer class labels, got {Y.dtype}")
    return X, Y


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
        if a.dtype.kind not in "biuf":
            raise SciPruneError(f"{name} must hold real numbers, got a numpy array of dtype {a.dtype}")
        a = torch.from_numpy(np.ascontiguousarray(a))
    if not isinstance(a, torch.Tensor):
        raise SciPruneError(f"{name} must be a tensor or numpy array, got {type(a).__name__}")
    if a.is_complex():
        raise SciPruneError(f"{name} must hold real numbers, got {a.dtype} (the real part is never taken silently)")
    if a.is_floating_point():
        if not _all_finite(a):
            raise SciPruneError(f"{name} contains NaN or infinite values")
        a = a.to(device=device, dtype=dtype)
    else:
        a = a.to(device=device)
    return a


class Batches:
    """A re-iterable of ``(X, Y)`` tensor batches on one device."""

    def __init__(self, source, *, device=None, dtype=None, batch_size: int | None = None,
                 shapes: tuple[int, int] | None = None) -> None:
        self.device, self.dtype, self.shapes = device, dtype, shapes
        batch_size = check_positive_int(batch_size, "batch_size", none_ok=True)
        self._tensors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._iterable = None
        if isinstance(source, tuple) and len(source) == 2:
            X = as_tensor(source[0], device=device, dtype=dtype, name="X")
            Y = as_tensor(source[1], device=device, dtype=dtype, name="Y")
            self._tensors = check_pair(X, Y, shapes)
            self.batch_size = batch_size or self._tensors[0].shape[0]
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
            yield check_pair(
                as_tensor(batch[0], device=self.device, dtype=self.dtype, name="X"),
                as_tensor(batch[1], device=self.device, dtype=self.dtype, name="Y"),
                self.shapes, names=(f"X of batch {n}", f"Y of batch {n}"),
            )
            n += 1
        if n == 0:
            raise SciPruneError("the data iterable yielded no batches")


def as_batches(data, *, device=None, dtype=None, batch_size: int | None = None, model=None) -> Batches:
    """Normalise ``data`` to :class:`Batches` (see module docstring), checked against ``model`` if given."""
    if isinstance(data, Batches):
        return data
    from .data._types import TaskData

    if isinstance(data, TaskData):
        data = (data.X_train, data.Y_train)
    shapes = model_shapes(model) if model is not None else None
    return Batches(data, device=device, dtype=dtype, batch_size=batch_size, shapes=shapes)
