"""Error metrics: MSE, relative L2, PDEBench's nRMSE, cross-entropy and accuracy."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .errors import SciPruneError
from .losses import torch_fn

__all__ = ["mse", "rel_l2", "nrmse_field", "cross_entropy", "accuracy", "loss_fn"]


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """mean((pred - target)^2) over every entry."""
    return float(F.mse_loss(pred, target))


def rel_l2(pred: torch.Tensor, target: torch.Tensor) -> float:
    """||pred - target||_2 / ||target||_2 over every entry (global relative L2 error)."""
    return float(torch.linalg.vector_norm(pred - target) / torch.linalg.vector_norm(target).clamp_min(1e-300))


def nrmse_field(pred: np.ndarray, target: np.ndarray) -> float:
    """PDEBench's nRMSE for one 1-D trajectory (Takamoto et al. 2022, ``metric_func``).

    For every output time t: sqrt(mean_x (p - y)^2) / sqrt(mean_x y^2); then the mean over t.
    Args: ``pred``, ``target`` of shape (Nt, Nx).
    """
    p, y = _field(pred, "pred"), _field(target, "target")
    if p.shape != y.shape:
        raise SciPruneError(
            f"nrmse_field: pred and target must have one shape (Nt, Nx), got pred {p.shape} and target {y.shape}"
        )
    err = np.sqrt(np.mean((p - y) ** 2, axis=1))
    ref = np.sqrt(np.mean(y**2, axis=1))
    return float(np.mean(err / np.maximum(ref, 1e-300)))


def _field(values, name: str) -> np.ndarray:
    """``values`` as a float64 (Nt, Nx) array with Nt, Nx >= 1; SciPruneError naming ``name`` otherwise."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    a = np.asarray(values)
    if a.dtype.kind not in "fiu":
        raise SciPruneError(f"nrmse_field: {name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim != 2 or 0 in a.shape:
        raise SciPruneError(
            f"nrmse_field: {name} must be a 2-D (Nt, Nx) array of one trajectory with Nt, Nx >= 1, got shape {a.shape}"
        )
    return a.astype(np.float64)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.cross_entropy(logits, labels))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).to(torch.float64).mean())


def loss_fn(name: str):
    """The training loss by name: ``F.mse_loss`` (``mse``) or ``F.cross_entropy``; :func:`sciprune.losses.torch_fn`."""
    return torch_fn(name)
