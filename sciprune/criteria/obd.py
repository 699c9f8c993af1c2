"""Optimal Brain Damage: ``1/2 d_i W_i^2``, d the exact Gauss-Newton diagonal of the training loss.

LeCun, Denker & Solla 1990 ("Optimal Brain Damage"), with the curvature Laurent et al. (2020,
arXiv 2006.12279) use: the exact diagonal of the generalised Gauss-Newton matrix (the true Fisher for
softmax cross-entropy; ``(2 / (N C)) sum_{n,c} (dy_nc/dW_i)^2`` for sciprune's MSE, mean over N
samples and C outputs), over all training rows or ``examples`` of them (:mod:`._loss_models`).
"""

from __future__ import annotations

from ._loss_models import EXAMPLES_OPTION, loss_model_scores, select_examples, weight_ggn_diagonal
from ._loss_models_batched import batched_loss_model_scores
from ._registry import ScoreResult, Stacked, register, register_batched


@register("obd", summary="1/2 diag(GGN) W^2: Optimal Brain Damage with the exact Gauss-Newton diagonal",
          needs_data=True, options=EXAMPLES_OPTION)
def obd(model, batches, names, generator, *, examples=None) -> ScoreResult:
    rows = select_examples(batches, examples, generator)
    return loss_model_scores(model, names, grad=None, diag=weight_ggn_diagonal(model, rows, names))


@register_batched("obd")
def obd_batched(stack: Stacked, *, examples=None) -> ScoreResult:
    """OBD of M members at once: one stacked forward pass, C cotangents back per chunk."""
    return batched_loss_model_scores(stack, examples, grad=False, diag=True)
