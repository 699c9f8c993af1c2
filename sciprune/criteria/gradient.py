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

from .. import losses
from ._registry import ScoreResult, Stacked, register, register_batched


def _summed_loss(y: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The batch's loss summed as ``reduction="sum"`` and the count the mean divides it by."""
    loss = losses.loss_for_targets(Y)
    return losses.value(loss, y, losses.targets(loss, y, Y), "sum"), losses.count(loss, y)


@register("gradient", summary="|W * dL/dW|: first-order Taylor change of the training loss (full-batch gradient)",
          needs_data=True)
def gradient(model, batches, names, generator, **options) -> ScoreResult:
    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    total = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    count = 0
    with torch.enable_grad():
        for X, Y in batches:
            loss, k = _summed_loss(model(X), Y)
            grads = torch.autograd.grad(loss, weights, allow_unused=True)
            for acc, g in zip(total, grads):
                if g is not None:
                    acc += g.to(torch.float64)
            count += k
    return ScoreResult({n: (w.detach().to(torch.float64) * acc / count).abs() for n, w, acc in zip(names, weights, total)})


@register_batched("gradient")
def gradient_batched(stack: Stacked, **options) -> ScoreResult:
    """One batched forward and an explicit batched backward of ``sum_m L_m`` on the stacked weights:
    ``d(sum_k L_k)/dW_m = dL_m/dW_m``, so the members' gradients stay apart
    (:func:`sciprune.ensemble._batched_stats._gradient_scores`)."""
    from ..ensemble._batched_stats import _gradient_scores  # lazy: the ensemble package imports the criteria

    X, xs, Y, ys, N = stack.data
    return ScoreResult(_gradient_scores(stack.template, stack.params, stack.names, X, xs, Y, ys, stack.M, N,
                                        stack.batch_size))
