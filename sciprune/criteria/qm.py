"""Quadratic loss model (QM, Laurent et al. 2020, arXiv 2006.12279):
``|-g_i W_i + 1/2 d_i W_i^2| + 1/2 lambda W_i^2``.

``g`` the mean gradient and ``d`` the exact Gauss-Newton diagonal of the training loss, both over all
rows or the same ``examples`` of them, from one forward pass and one backward walk of C + 1 cotangents;
``lambda`` the option ``locality`` (default 0); :mod:`._loss_models`.
"""

from __future__ import annotations

from ._loss_models import (EXAMPLES_OPTION, LOCALITY_OPTION, check_locality, loss_model_scores, loss_model_terms,
                           select_examples)
from ._loss_models_batched import batched_loss_model_scores
from ._registry import ScoreResult, Stacked, register, register_batched


@register("qm", summary="|-g W + 1/2 diag(GGN) W^2| + 1/2 lambda W^2: quadratic loss model (Laurent et al. 2020)",
          needs_data=True, options={**EXAMPLES_OPTION, **LOCALITY_OPTION})
def qm(model, batches, names, generator, *, examples=None, locality=0.0) -> ScoreResult:
    locality = check_locality(locality)
    rows = select_examples(batches, examples, generator)
    g, d = loss_model_terms(model, rows, names, grad=True, diag=True)  # one forward, C + 1 cotangents back
    return loss_model_scores(model, names, grad=g, diag=d, locality=locality)


@register_batched("qm")
def qm_batched(stack: Stacked, *, examples=None, locality=0.0) -> ScoreResult:
    """QM of M members at once: one stacked forward pass, C + 1 cotangents back per chunk."""
    return batched_loss_model_scores(stack, examples, grad=True, diag=True, locality=check_locality(locality))
