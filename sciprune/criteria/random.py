"""Random pruning: i.i.d. U(0, 1) scores from a seeded generator, the chance baseline."""

from __future__ import annotations

import torch

from ._registry import ScoreResult, register


@register("random", summary="uniformly random weights (seeded baseline)", needs_data=False)
def random_scores(model, batches, names, generator, **options) -> ScoreResult:
    params = dict(model.named_parameters())
    out = {}
    for n in names:
        p = params[n]
        out[n] = torch.rand(p.shape, generator=generator, dtype=torch.float64).to(p.device)
    return ScoreResult(out)
