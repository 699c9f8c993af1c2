"""The training losses by name, their gradients and output-space Hessians: the one definition in sciprune.

For outputs ``y`` of shape (B, C) (leading dimensions allowed where stated) and targets ``t``:

* ``"mse"``: per sample ``l_n = (1/C) ||y_n - t_n||^2``; the mean ``L = (1/(B C)) sum_{n,c} (y - t)^2`` is
  ``F.mse_loss`` (mean over samples and outputs).
* ``"cross_entropy"``: per sample ``l_n = -log softmax(y_n)_{t_n}`` (or ``-sum_c t_nc log softmax(y_n)_c``
  for class probabilities); the mean ``L = (1/B) sum_n l_n`` is ``F.cross_entropy`` (mean over samples).

Every reduction is named as in ``torch.nn.functional`` plus one: ``"none"`` (the terms: (..., B, C)
squared errors or (..., B) cross-entropies), ``"sum"`` (``reduction="sum"``: the sum of the terms),
``"mean"`` (the default: the sum over :func:`count` terms) and ``"sample_sum"`` (``sum_n l_n = B L``,
the per-sample convention of the curvature operators). The output-space Hessian ``H_n = d^2 l_n / dy_n^2``
is ``(2/C) I`` (MSE) or ``diag(p) - p p^T`` with ``p = softmax(y_n)`` (cross-entropy, for targets that
sum to one), and that of the mean is ``H_n / B``; both are written ``H_n = S S^T`` with the columns
``S_c = sqrt(2/C) e_c`` (MSE) or ``S_c = sqrt(p_c) (e_c - p)`` (cross-entropy), Martens 2020 ("New
insights and perspectives on the natural gradient method", sec. 9).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import SciPruneError

__all__ = [
    "LOSSES",
    "REDUCTIONS",
    "check_loss",
    "count",
    "loss_for_targets",
    "loss_sum",
    "out_grad",
    "out_hessian",
    "out_hessian_product",
    "out_hessian_sqrt",
    "resolve",
    "sampled_out_grad",
    "targets",
    "torch_fn",
    "value",
]

LOSSES = ("mse", "cross_entropy")
REDUCTIONS = ("none", "sum", "mean", "sample_sum")


def check_loss(loss: str) -> str:
    """``loss`` if it names a loss of :data:`LOSSES`; SciPruneError otherwise."""
    if not isinstance(loss, str) or loss not in LOSSES:
        raise SciPruneError(f"loss must be one of {list(LOSSES)}, got {loss!r}; use 'mse' for regression")
    return loss


def loss_for_targets(Y: torch.Tensor) -> str:
    """The loss a target tensor asks for: floating ``Y`` -> ``"mse"``, integer labels -> ``"cross_entropy"``."""
    if not isinstance(Y, torch.Tensor):
        raise SciPruneError(f"targets must be a torch.Tensor to choose the loss from, got {type(Y).__name__}")
    if Y.is_floating_point():
        return "mse"
    if Y.dtype == torch.bool or Y.is_complex():
        raise SciPruneError(f"targets must be floating (loss 'mse') or integer labels (loss 'cross_entropy'), got {Y.dtype}")
    return "cross_entropy"


def resolve(loss: str | None, Y: torch.Tensor) -> str:
    """``loss`` checked, or (None) the loss :func:`loss_for_targets` chooses from ``Y``'s dtype."""
    return loss_for_targets(Y) if loss is None else check_loss(loss)


def torch_fn(loss: str) -> Callable[..., torch.Tensor]:
    """The ``torch.nn.functional`` loss by name: ``F.mse_loss`` or ``F.cross_entropy`` (same reductions)."""
    return F.mse_loss if check_loss(loss) == "mse" else F.cross_entropy


def _check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> str:
    if reduction not in allowed:
        raise SciPruneError(f"reduction must be one of {list(allowed)}, got {reduction!r}")
    return reduction


def _outputs(y: torch.Tensor) -> tuple[int, int]:
    """(B, C) of outputs ``y`` of shape (..., B, C)."""
    if not isinstance(y, torch.Tensor) or y.ndim < 2 or not y.is_floating_point():
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise SciPruneError(f"model outputs must be a floating tensor of shape (B, C), got {shape}")
    return y.shape[-2], y.shape[-1]


def targets(loss: str, y: torch.Tensor, Y: torch.Tensor, *, probabilities: bool = False) -> torch.Tensor:
    """``Y`` checked and shaped for outputs ``y`` (..., B, C): MSE (..., B, C) floats, CE (..., B) int64 labels.

    MSE takes floating targets with one entry per output, reshaped to ``y``'s shape (or to (B, C),
    shared by the leading dimensions). Cross-entropy takes integer labels in [0, C), one per sample,
    or with ``probabilities`` floating class probabilities shaped like ``y``.
    """
    check_loss(loss)
    B, C = _outputs(y)
    if not isinstance(Y, torch.Tensor):
        raise SciPruneError(f"targets must be a torch.Tensor, got {type(Y).__name__}")
    if loss == "mse":
        if Y.is_floating_point():
            if Y.numel() == y.numel():
                return Y.reshape(y.shape)
            if Y.numel() == B * C:
                return Y.reshape(B, C)
        raise SciPruneError(f"loss 'mse' needs floating targets of shape ({B}, {C}), one per output, "
                            f"got {Y.dtype} {tuple(Y.shape)}")
    if Y.is_floating_point():
        if probabilities and Y.shape == y.shape:
            return Y
    elif Y.dtype != torch.bool and not Y.is_complex():
        n = Y.numel()
        if n == y.numel() // C or n == B:
            T = Y.reshape(y.shape[:-1] if n == y.numel() // C else (B,)).long()
            if n and (int(T.min()) < 0 or int(T.max()) >= C):
                raise SciPruneError(f"loss 'cross_entropy' needs labels in [0, {C}) for {C} outputs, "
                                    f"got labels from {int(T.min())} to {int(T.max())}")
            return T
    also = f" or class probabilities of shape {tuple(y.shape)}" if probabilities else ""
    raise SciPruneError(f"loss 'cross_entropy' needs integer labels of shape ({B},){also}, got {Y.dtype} {tuple(Y.shape)}")


def count(loss: str, y: torch.Tensor) -> int:
    """The number of terms the mean divides by, per leading index: ``B C`` (MSE) or ``B`` (cross-entropy)."""
    B, C = _outputs(y)
    return B * C if check_loss(loss) == "mse" else B


def loss_sum(loss: str, y: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``sum_n l_n`` over a batch (B, C) with ``T`` from :func:`targets`: ``B`` times the mean."""
    if loss == "mse":
        return ((y - T) ** 2).sum() / y[0].numel()
    return F.cross_entropy(y, T, reduction="sum")


def value(loss: str, y: torch.Tensor, T: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """The loss of outputs ``y`` at targets ``T`` (from :func:`targets`), reduced as the module docstring says.

    ``"none"`` accepts leading dimensions (..., B, C): MSE ``(y - t)^2`` (..., B, C), cross-entropy
    ``l_n`` (..., B); the other reductions take y of shape (B, C) and return a scalar.
    """
    check_loss(loss)
    _check_reduction(reduction)
    if reduction == "none":
        if loss == "mse":
            return (y - T).square()
        C = y.shape[-1]
        if T.is_floating_point():
            T = T.expand(y.shape).reshape(-1, C)
        else:
            T = T.expand(y.shape[:-1]).reshape(-1)
        return F.cross_entropy(y.reshape(-1, C), T, reduction="none").view(y.shape[:-1])
    if y.ndim != 2:
        raise SciPruneError(f"reduction {reduction!r} needs outputs of shape (B, C), got {tuple(y.shape)}; use 'none'")
    if reduction == "sample_sum":
        return loss_sum(loss, y, T)
    return torch_fn(loss)(y, T, reduction=reduction)


def out_grad(loss: str, y: torch.Tensor, T: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``dL/dy`` (shape of y, leading dimensions allowed) for ``reduction`` "sum", "mean" or "sample_sum".

    Of the sum: MSE ``2 (y - t)``, cross-entropy ``softmax(y) - e_t`` (``softmax(y) sum_c t_c - t`` for
    probabilities); the mean divides by :func:`count`, the sample sum by ``C`` (MSE) or 1.
    """
    check_loss(loss)
    _check_reduction(reduction, ("sum", "mean", "sample_sum"))
    B, C = _outputs(y)
    if loss == "mse":
        g = (y - T).mul_(2.0)
    elif T.is_floating_point():
        g = torch.softmax(y, dim=-1) * T.sum(-1, keepdim=True) - T
    else:
        g = torch.softmax(y, dim=-1)
        lab = T.expand(y.shape[:-1]).unsqueeze(-1)
        g.scatter_(-1, lab, g.gather(-1, lab) - 1.0)
    if reduction == "sum":
        return g
    if reduction == "mean":
        return g / count(loss, y)
    return g / C if loss == "mse" else g


def out_hessian(loss: str, y: torch.Tensor, reduction: str = "sample_sum") -> torch.Tensor:
    """Dense output-space Hessian blocks ``d^2 L / dy_n^2``: (..., B, C, C).

    ``"sample_sum"``: ``H_n`` = ``(2/C) I`` (MSE) or ``diag(p) - p p^T`` (cross-entropy, targets summing
    to one); ``"mean"``: ``H_n / B``; ``"sum"``: ``2 I`` (MSE) or ``H_n``. Blocks across samples are zero.
    """
    check_loss(loss)
    _check_reduction(reduction, ("sum", "mean", "sample_sum"))
    B, C = _outputs(y)
    eye = torch.eye(C, dtype=y.dtype, device=y.device)
    if loss == "mse":
        scale = {"sum": 2.0, "mean": 2.0 / (B * C), "sample_sum": 2.0 / C}[reduction]
        return (scale * eye).expand(*y.shape, C).clone()
    p = torch.softmax(y, dim=-1)
    H = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]
    return H / B if reduction == "mean" else H


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
