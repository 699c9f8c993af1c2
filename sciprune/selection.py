"""Scores -> masks for a pruning ratio, globally or layer by layer.

Rounding rule: with n weights in the ranking pool (already-pruned ones included), exactly
``k = floor(ratio * n + 0.5)`` are pruned: the lowest-scored, ties broken by position (the weight
that comes first in ``named_parameters`` order and row-major order goes first). Already-pruned
weights rank below every live weight, so masks only shrink; if more than ``k`` are already pruned
they stay pruned and the achieved ratio is above the request.
"""

from __future__ import annotations

import math

import torch

from .checks import check_choice
from .errors import SciPruneError

__all__ = ["check_ratio", "n_to_prune", "select"]

SCOPES = ("global", "layer")


def check_ratio(ratio: float, *, unit: str = "weights") -> float:
    """Validate a pruning ratio: the fraction of ``unit`` (weights, or neurons) removed, in [0, 1)."""
    if isinstance(ratio, bool):
        raise SciPruneError(f"ratio must be a number in [0, 1), got {ratio!r}")
    try:
        r = float(ratio)
    except (TypeError, ValueError, OverflowError):
        raise SciPruneError(f"ratio must be a number in [0, 1), got {ratio!r}") from None
    if not (0.0 <= r < 1.0) or math.isnan(r):
        raise SciPruneError(f"ratio must be in [0, 1) (the fraction of {unit} removed), got {ratio!r}")
    return r


def n_to_prune(ratio: float, n: int) -> int:
    """The number of weights pruned from a pool of ``n`` at ``ratio`` (round half up)."""
    return int(math.floor(check_ratio(ratio) * n + 0.5))


def _select_pool(score: torch.Tensor, alive: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask over a flat pool: prune the ``k`` lowest scores among dead-first ordering."""
    s = score.detach().to(torch.float64)
    order = torch.sort(s, stable=True).indices
    # Dead weights first, whatever their score (a live score of -inf must not push a dead one out).
    order = order[torch.sort((alive[order]).to(torch.int8), stable=True).indices]
    keep = torch.ones_like(alive)
    k = max(k, int((~alive).sum()))
    keep[order[:k]] = False
    return keep


def select(
    scores: dict[str, torch.Tensor],
    ratio: float,
    *,
    scope: str = "global",
    masks: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Keep-masks (True = kept) that prune ``ratio`` of the scored weights, lowest scores first.

    Args:
        scores: name -> score tensor (higher = more important), one per prunable weight.
        ratio: fraction of weights to remove, in [0, 1).
        scope: ``"global"`` ranks all weights together; ``"layer"`` prunes ``ratio`` of each tensor.
        masks: current keep-masks; weights already pruned stay pruned.
    """
    check_ratio(ratio)
    check_choice(scope, SCOPES, "scope")
    if not scores:
        raise SciPruneError("no scores given: the model has no prunable weights")
    for name, s in scores.items():
        if torch.isnan(s).any():
            raise SciPruneError(f"scores for {name!r} contain NaN; the criterion failed on this model or data")
    alive = {
        n: (masks[n].to(s.device).bool() if masks is not None and n in masks else torch.ones_like(s, dtype=torch.bool))
        for n, s in scores.items()
    }
    if scope == "layer":
        return {
            n: _select_pool(s.flatten(), alive[n].flatten(), n_to_prune(ratio, s.numel())).view_as(s)
            for n, s in scores.items()
        }
    names = list(scores)
    flat = torch.cat([scores[n].detach().flatten().to(torch.float64).cpu() for n in names])
    live = torch.cat([alive[n].flatten().cpu() for n in names])
    keep = _select_pool(flat, live, n_to_prune(ratio, flat.numel()))
    out, start = {}, 0
    for n in names:
        size = scores[n].numel()
        out[n] = keep[start : start + size].view_as(scores[n]).to(scores[n].device)
        start += size
    return out
