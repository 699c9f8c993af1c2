"""Linear loss model (LM, Laurent et al. 2020, arXiv 2006.12279): ``|g_i W_i| + 1/2 lambda W_i^2``.

``g`` the mean gradient of the training loss over all rows or ``examples`` of them, ``lambda`` the
option ``locality`` (default 0, where LM on all rows equals ``gradient``); :mod:`._loss_models`.
"""

from __future__ import annotations

from ._loss_models import (EXAMPLES_OPTION, LOCALITY_OPTION, check_locality, loss_model_scores, mean_gradient,
                           select_examples)
from ._loss_models_batched import batched_loss_model_scores
from ._registry import ScoreResult, Stacked, register, register_batched


@register("lm", summary="|-g W| + 1/2 lambda W^2: linear loss model with locality (Laurent et al. 2020)",
          needs_data=True, options={**EXAMPLES_OPTION, **LOCALITY_OPTION})
def lm(model, batches, names, generator, *, examples=None, locality=0.0) -> ScoreResult:
    locality = check_locality(locality)
    rows = select_examples(batches, examples, generator)
    return loss_model_scores(model, names, grad=mean_gradient(model, rows, names), diag=None, locality=locality)


@register_batched("lm")
def lm_batched(stack: Stacked, *, examples=None, locality=0.0) -> ScoreResult:
    """LM of M members at once: one stacked forward pass, one cotangent back per chunk."""
    return batched_loss_model_scores(stack, examples, grad=True, diag=False, locality=check_locality(locality))
