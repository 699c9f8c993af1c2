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
import torch.nn.functional as F

from ..errors import SciPruneError
from ._registry import ScoreResult, register


def _summed_loss(y: torch.Tensor, Y: torch.Tensor) -> tuple[torch.Tensor, int]:
    if Y.is_floating_point():
        if Y.numel() != y.numel():
            raise SciPruneError(f"targets of shape {tuple(Y.shape)} do not match outputs of shape {tuple(y.shape)}")
        return F.mse_loss(y, Y.reshape(y.shape), reduction="sum"), y.numel()
    return F.cross_entropy(y, Y.long().reshape(-1), reduction="sum"), y.shape[0]


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
