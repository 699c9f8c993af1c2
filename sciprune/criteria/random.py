"""Random pruning: i.i.d. U(0, 1) scores from a seeded generator, the chance baseline."""

from __future__ import annotations

import torch

from ._registry import ScoreResult, Stacked, register, register_batched


@register("random", summary="uniformly random weights (seeded baseline)", needs_data=False)
def random_scores(model, batches, names, generator, **options) -> ScoreResult:
    params = dict(model.named_parameters())
    out = {}
    for n in names:
        p = params[n]
        out[n] = torch.rand(p.shape, generator=generator, dtype=torch.float64).to(p.device)
    return ScoreResult(out)


@register_batched("random")
def random_batched(stack: Stacked, **options) -> ScoreResult:
    """Member m's scores from a generator seeded with ``stack.seeds[m]``, drawn name by name in the
    order of :func:`random_scores` (so they are identical to it)."""
    gens = [torch.Generator().manual_seed(s) for s in stack.seeds]
    out = {}
    for n in stack.names:
        p = stack.params[n]
        out[n] = torch.stack([torch.rand(p.shape[1:], generator=g, dtype=torch.float64) for g in gens]).to(p.device)
    return ScoreResult(out)
