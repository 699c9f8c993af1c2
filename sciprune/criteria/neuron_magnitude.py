"""Neuron magnitude: score_i = ||W_l[i, :]||_2, the L2 norm of hidden neuron i's incoming weights.

The simple neuron baseline of issue 13 ("magnitude-of-neuron", against which Molchanov et al. 2019,
"Importance Estimation for Neural Network Pruning", compare their Taylor criterion as weight
magnitude). The bias is not included: the norm is of the incoming *weights* (row i of W_l), as in
the issue's definition and in filter-norm pruning (Li et al. 2017, "Pruning Filters for Efficient
ConvNets", which also leaves the bias out). Masked weights are zero, so they add nothing.
"""

from __future__ import annotations

import torch

from ._registry import ScoreResult, register


@register("neuron-magnitude", summary="||W_l[i, :]||_2: remove the hidden neurons with the smallest incoming "
          "weights (neuron granularity)", needs_data=False, granularity="neuron")
def neuron_magnitude(model, batches, names, generator, **options) -> ScoreResult:
    params = dict(model.named_parameters())
    return ScoreResult({n: torch.linalg.vector_norm(params[n].detach(), ord=2, dim=1) for n in names})
