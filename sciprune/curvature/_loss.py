"""The losses of the curvature operators, their output Hessians and the square roots of these.

Per sample n with network output ``y`` (C entries) the loss is
``l_n = (1/C) ||y - t||^2`` (``"mse"``: ``F.mse_loss``, mean over all entries) or
``l_n = -log softmax(y)_t`` (``"cross_entropy"``), and the data-set loss is ``L = (1/N) sum_n l_n``
whatever the batching. The output Hessian ``H_n = d^2 l_n / dy^2`` is ``(2/C) I`` (MSE) or
``diag(p) - p p^T`` with ``p = softmax(y)`` (cross-entropy); both are written ``H_n = S S^T`` with the
columns ``S_c = sqrt(2/C) e_c`` (MSE) or ``S_c = sqrt(p_c) (e_c - p)`` (cross-entropy).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..batches import Batches, as_batches
from ..errors import SciPruneError

__all__ = ["LOSSES", "check_loss", "loss_sum", "out_hessian_product", "out_hessian_sqrt", "prepare", "sampled_out_grad"]

LOSSES = ("mse", "cross_entropy")


def check_loss(loss: str) -> str:
    if loss not in LOSSES:
        raise SciPruneError(f"loss must be one of {list(LOSSES)}, got {loss!r}; use 'mse' for regression")
    return loss


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
    """``Y`` in the form the loss needs next to the output ``y`` (B, C)."""
    if loss == "mse":
        if Y.numel() != y.numel():
            raise SciPruneError(f"MSE targets must have one entry per output, got Y of shape {tuple(Y.shape)} for outputs {tuple(y.shape)}")
        return Y.reshape(y.shape)
    if Y.is_floating_point() and Y.shape != y.shape:
        raise SciPruneError(
            f"cross-entropy targets must be integer labels (B,) or probabilities shaped like the logits {tuple(y.shape)}, "
            f"got floating Y of shape {tuple(Y.shape)}; use Y.long() for labels"
        )
    return Y


def loss_sum(loss: str, y: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``sum_n l_n`` over a batch (divide by N for the data-set loss)."""
    if loss == "mse":
        return ((y - T) ** 2).sum() / y[0].numel()
    return F.cross_entropy(y, T, reduction="sum")


def out_hessian_product(loss: str, y: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """``H_n u_n`` for every sample: y, u (B, C)."""
    if loss == "mse":
        return u * (2.0 / y.shape[-1])
    p = torch.softmax(y, dim=-1)
    pu = p * u
    return pu - p * pu.sum(-1, keepdim=True)


def out_hessian_sqrt(loss: str, y: torch.Tensor) -> torch.Tensor:
    """``S`` with ``H_n = sum_c S[n, c] S[n, c]^T``: shape (B, C, C) (MSE: (1, C, C), the same for all)."""
    C = y.shape[-1]
    eye = torch.eye(C, dtype=y.dtype, device=y.device)
    if loss == "mse":
        return (math.sqrt(2.0 / C) * eye)[None]
    p = torch.softmax(y, dim=-1)
    return p.sqrt()[:, :, None] * (eye[None] - p[:, None, :])


def sampled_out_grad(loss: str, y: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``dl_n/dy`` with the target drawn from the model's predictive distribution: (B, 1, C).

    MSE: ``t ~ N(y, (C/2) I)``, the Gaussian whose negative log-likelihood has the curvature ``(2/C) I``
    of ``l_n``, so the gradient is ``-sqrt(2/C) eps``. Cross-entropy: ``t ~ Categorical(softmax(y))``,
    gradient ``p - e_t``. Both have ``E[g g^T] = H_n``. Drawn from a numpy Generator, whose streams do
    not depend on how the draws are split, so the result does not depend on the batch size.
    """
    B, C = y.shape
    if loss == "mse":
        eps = torch.from_numpy(rng.standard_normal((B, C))).to(device=y.device, dtype=y.dtype)
        return (-math.sqrt(2.0 / C) * eps)[:, None, :]
    p = torch.softmax(y, dim=-1)
    u = torch.from_numpy(rng.random(B)).to(device=y.device, dtype=p.dtype)
    t = (p.cumsum(-1) < u[:, None]).sum(-1).clamp_max(C - 1)
    return (p - F.one_hot(t, C).to(p.dtype))[:, None, :]
