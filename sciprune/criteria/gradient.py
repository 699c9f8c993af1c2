"""Gradient-magnitude (first-order Taylor of the loss): ``|W ⊙ dL/dW|`` with the full-batch gradient.

Molchanov et al. 2017 ("Pruning convolutional neural networks for resource efficient inference"),
one of the baselines of Ballini et al. (arXiv 2602.20467). ``L`` is the training loss over the whole
data set: MSE (mean over samples and outputs) for float targets, cross-entropy (mean over samples)
for integer labels, as in ``sciprune.fit``. The gradient of that mean is accumulated over the
batches first (the sum of the per-batch gradients of the summed loss, divided by the count) and the
absolute value is taken last: the score is ``|W_ij (dL/dW)_ij|`` for the full-batch gradient, which
does not depend on how the data are batched (per-batch absolute values would).
"""

from __future__ import annotations

import torch

from ._loss_models import summed_gradient
from ._registry import ScoreResult, Stacked, register, register_batched


@register("gradient", summary="|W * dL/dW|: first-order Taylor change of the training loss (full-batch gradient)",
          needs_data=True)
def gradient(model, batches, names, generator, **options) -> ScoreResult:
    total, count = summed_gradient(model, batches, names)
    params = dict(model.named_parameters())
    return ScoreResult({n: (params[n].detach().to(torch.float64) * total[n] / count).abs() for n in names})


@register_batched("gradient")
def gradient_batched(stack: Stacked, **options) -> ScoreResult:
    """One batched forward and an explicit batched backward of ``sum_m L_m`` on the stacked weights:
    ``d(sum_k L_k)/dW_m = dL_m/dW_m``, so the members' gradients stay apart
    (:func:`sciprune.ensemble._batched_stats._gradient_scores`)."""
    from ..ensemble._batched_stats import _gradient_scores  # lazy: the ensemble package imports the criteria

    X, xs, Y, ys, N = stack.data
    return ScoreResult(_gradient_scores(stack.template, stack.params, stack.names, X, xs, Y, ys, stack.M, N,
                                        stack.batch_size))
