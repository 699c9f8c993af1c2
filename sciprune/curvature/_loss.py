"""Curvature's view of the losses (defined in :mod:`sciprune.losses`), its matrix names and its batches.

Per sample n with network output ``y`` (C entries) the loss is ``l_n = (1/C) ||y - t||^2`` (``"mse"``)
or ``l_n = -log softmax(y)_t`` (``"cross_entropy"``, integer labels or class probabilities), and the
data-set loss is ``L = (1/N) sum_n l_n`` whatever the batching; the output Hessians ``H_n`` and their
square roots are :func:`sciprune.losses.out_hessian_product` / :func:`sciprune.losses.out_hessian_sqrt`.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import losses as _losses
from ..batches import Batches, as_batches
from ..errors import SciPruneError
from ..losses import LOSSES, check_loss, loss_sum, out_hessian_product, out_hessian_sqrt, sampled_out_grad

__all__ = ["LOSSES", "check_loss", "check_matrix", "loss_sum", "out_hessian_product", "out_hessian_sqrt", "prepare",
           "sampled_out_grad", "targets"]


def check_matrix(matrix: str) -> str:
    if matrix not in ("hessian", "ggn"):
        raise SciPruneError(f"matrix must be 'hessian' or 'ggn', got {matrix!r}")
    return matrix


def prepare(model: nn.Module, data, batch_size: int | None) -> Batches:
    """Batches of ``data`` on the model's device, floating data in the model's dtype."""
    p = next(model.parameters(), None)
    if p is None:
        raise SciPruneError(f"model must have parameters, got a {type(model).__name__} without any")
    return as_batches(data, device=p.device, dtype=p.dtype, batch_size=batch_size)


def targets(loss: str, y: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """``Y`` in the form the loss needs next to the output ``y`` (B, C); class probabilities accepted."""
    return _losses.targets(loss, y, Y, probabilities=True)
