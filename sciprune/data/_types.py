"""Containers for a learning task: train/validation/test tensors plus what made them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import torch

from ..scaling import Scaling

__all__ = ["TaskData"]

_TENSOR_FIELDS = (
    "X_train", "Y_train", "X_val", "Y_val", "X_test", "Y_test",
    "Y_train_clean", "Y_val_clean", "Y_test_clean",
)


@dataclass(frozen=True)
class TaskData:
    """A supervised task ready for training, in network units.

    Regression: ``X_*`` (N, F_in) float, ``Y_*`` (N, F_out) float (noisy targets), and
    ``Y_*_clean`` the same targets without noise. Classification: ``Y_*`` (N,) int64 labels and
    the ``*_clean`` fields are None. ``input_scaling``/``output_scaling`` map physical units to
    network units (None for classification outputs). ``provenance`` records the file, sample,
    split, noise law and seeds that made the data (JSON-serialisable).
    """

    task: Literal["regression", "classification"]
    X_train: torch.Tensor
    Y_train: torch.Tensor
    X_val: torch.Tensor
    Y_val: torch.Tensor
    X_test: torch.Tensor
    Y_test: torch.Tensor
    Y_train_clean: torch.Tensor | None = None
    Y_val_clean: torch.Tensor | None = None
    Y_test_clean: torch.Tensor | None = None
    input_scaling: Scaling | None = None
    output_scaling: Scaling | None = None
    provenance: dict = field(default_factory=dict)
    n_classes: int | None = None

    @property
    def in_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def out_features(self) -> int:
        if self.task == "classification":
            return int(self.n_classes)
        return int(self.Y_train.shape[1])

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "TaskData":
        """Copy with every tensor on ``device``; floating tensors cast to ``dtype`` (labels stay int64)."""
        changes = {}
        for name in _TENSOR_FIELDS:
            t = getattr(self, name)
            if t is None:
                continue
            if dtype is not None and t.is_floating_point():
                t = t.to(device=device, dtype=dtype)
            else:
                t = t.to(device=device)
            changes[name] = t
        return replace(self, **changes)
