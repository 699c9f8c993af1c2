"""Magnitude pruning: score_ij = |W_ij| (Han et al. 2015, "Learning both weights and connections")."""

from __future__ import annotations

from ._registry import ScoreResult, Stacked, register, register_batched


@register("magnitude", summary="|W|: remove the smallest weights", needs_data=False)
def magnitude(model, batches, names, generator, **options) -> ScoreResult:
    params = dict(model.named_parameters())
    return ScoreResult({n: params[n].detach().abs().clone() for n in names})


@register_batched("magnitude")
def magnitude_batched(stack: Stacked, **options) -> ScoreResult:
    """``|W|`` of every member at once: the absolute value of the stacked weights."""
    return ScoreResult({n: stack.params[n].abs() for n in stack.names})
