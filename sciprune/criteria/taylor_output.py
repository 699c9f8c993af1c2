"""Output-sensitivity Taylor score without compensation: ``W_ij^2 E_x[G_i a_j^2]``.

The removal of ``W_ij`` changes the outputs, to first order, by ``dy_k = g_ik a_j W_ij`` with
``g_ik = dy_k/dz_i``; its mean square is ``W_ij^2 E[G_i a_j^2]``, ``G_i = sum_k g_ik^2``: the EC
importance of Ballini et al. (arXiv 2602.20467, Sec. 3) with the bias shift held at zero, an upper
bound of it (an OBD-like output sensitivity). Same statistics and cost as ``ec``; no bias shifts.
"""

from __future__ import annotations

import torch

from ._registry import ScoreResult, Stacked, register, register_batched
from .ec import OPTIONS, batched_output_sensitivity, ec_statistics


@register("taylor-output", summary="W^2 E[|dy/dz_i|^2 a_j^2]: first-order output change, no compensation",
          needs_data=True, options=OPTIONS)
def taylor_output(model, batches, names, generator, *, probes=None, probe_distribution="rademacher") -> ScoreResult:
    params = dict(model.named_parameters())
    stats = ec_statistics(model, batches, names, generator, probes, probe_distribution)
    out = {}
    for n in names:
        W = params[n].detach().to(torch.float64)
        s = stats[n]
        out[n] = W * W * s.S2.clamp_min(0.0) / s.n
    return ScoreResult(out)


@register_batched("taylor-output")
def taylor_output_batched(stack: Stacked, *, probes=None, probe_distribution="rademacher") -> ScoreResult | None:
    """EC's batched pass with a member axis, exact only (random probes: the per-member loop)."""
    return batched_output_sensitivity(stack, "taylor-output", probes, probe_distribution)
