"""Quadratic loss model (QM, Laurent et al. 2020, arXiv 2006.12279):
``|-g_i W_i + 1/2 d_i W_i^2| + 1/2 lambda W_i^2``.

``g`` the mean gradient and ``d`` the exact Gauss-Newton diagonal of the training loss, both over all
rows or the same ``examples`` of them; ``lambda`` the option ``locality`` (default 0); :mod:`._loss_models`.
"""

from __future__ import annotations

from ._loss_models import (EXAMPLES_OPTION, LOCALITY_OPTION, check_locality, loss_model_scores, mean_gradient,
                           select_examples, weight_ggn_diagonal)
from ._registry import ScoreResult, register


@register("qm", summary="|-g W + 1/2 diag(GGN) W^2| + 1/2 lambda W^2: quadratic loss model (Laurent et al. 2020)",
          needs_data=True, options={**EXAMPLES_OPTION, **LOCALITY_OPTION})
def qm(model, batches, names, generator, *, examples=None, locality=0.0) -> ScoreResult:
    locality = check_locality(locality)
    rows = select_examples(batches, examples, generator)
    return loss_model_scores(model, names, grad=mean_gradient(model, rows, names),
                             diag=weight_ggn_diagonal(model, rows, names), locality=locality)
