"""The library entry points for scoring and pruning: ``scores`` and ``prune``.

Score, select, apply: a criterion scores every prunable weight (``sciprune.criteria``), selection
turns scores into keep-masks for a ratio and scope (``sciprune.selection``), and the one mask
mechanism applies them (``sciprune.masks``), plus bias shifts where the criterion compensates
or ``prune(..., compensate=True)`` asks for elimination-compensation shifts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import criteria as _criteria
from .batches import as_batches
from .errors import SciPruneError
from .masks import get_masks, prunable_names, set_masks, sparsity
from .selection import check_ratio, select

__all__ = ["scores", "score_result", "prune", "PruneReport"]


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters(), None)
    if p is None:
        raise SciPruneError("model has no parameters")
    return p.device, p.dtype


def score_result(
    model: nn.Module,
    method: str,
    data=None,
    *,
    names: list[str] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    **options,
) -> _criteria.ScoreResult:
    """Run criterion ``method`` and return its full :class:`ScoreResult` (scores and bias shifts)."""
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    crit = _criteria.get(method)
    unknown = set(options) - set(crit.options)
    if unknown:
        allowed = ", ".join(sorted(crit.options)) or "none"
        raise SciPruneError(f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {allowed}")
    names = list(names) if names is not None else prunable_names(model)
    device, dtype = _model_device_dtype(model)
    batches = None
    if crit.needs_data:
        if data is None:
            raise SciPruneError(f"method {method!r} needs data: pass (X, Y) or an iterable of batches")
        batches = as_batches(data, device=device, dtype=dtype, batch_size=batch_size)
    generator = torch.Generator().manual_seed(int(seed))
    was_training = model.training
    grads = {n: p.grad for n, p in model.named_parameters()}
    try:
        result = crit.compute(model, batches, names, generator, **options)
    finally:
        model.train(was_training)
        for n, p in model.named_parameters():
            p.grad = grads[n]
    missing = set(names) - set(result.scores)
    if missing:
        raise RuntimeError(f"criterion {method!r} returned no scores for {sorted(missing)}")
    return result


def scores(model: nn.Module, method: str, data=None, **options) -> dict[str, torch.Tensor]:
    """Importance of every prunable weight: ``{parameter name: tensor shaped like it}`` (higher = keep).

    ``data`` is ``(X, Y)`` (tensors or arrays), a TaskData, or an iterable of ``(X, Y)`` batches;
    criteria that need no data ignore it. Options: ``seed``, ``batch_size``, ``names`` and the
    criterion's own (see ``sciprune methods``). The model is left unchanged.
    """
    return score_result(model, method, data, **options).scores


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune` did: the method, requested ratio, achieved sparsity from the live tensors,
    and whether the biases were shifted to compensate the removed weights (``compensated``)."""

    method: str
    ratio: float
    scope: str
    pruned: int
    total: int
    sparsity: dict = field(repr=False)
    compensated: bool = False

    @property
    def achieved(self) -> float:
        return self.pruned / self.total if self.total else 0.0


@torch.no_grad()
def _apply_bias_shifts(model: nn.Module, shifts: dict[str, torch.Tensor], removed: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    todo = []
    for name, shift in shifts.items():  # check every layer first, so that an error changes nothing
        if name not in removed:
            continue
        bias_name = name.rsplit(".", 1)[0] + ".bias" if "." in name else "bias"
        bias = params.get(bias_name)
        if bias is None:
            raise SciPruneError(
                f"compensation needs a bias for {name!r}, but the layer has none; use compensate=False "
                "or give the layer a bias"
            )
        todo.append((bias, shift, removed[name]))
    for bias, shift, gone in todo:
        # summed in float64, rounded once to the bias dtype
        bias.add_((shift.to(torch.float64) * gone.to(torch.float64)).sum(dim=1).to(bias.dtype))


def prune(
    model: nn.Module,
    method: str,
    ratio: float,
    data=None,
    *,
    scope: str = "global",
    compensate: bool | None = None,
    **options,
) -> PruneReport:
    """Prune ``ratio`` of the prunable weights of ``model`` in place, lowest ``method`` scores first.

    ``ratio`` is the fraction of weights removed (biases excluded), in [0, 1); ``scope`` is
    ``"global"`` (one ranking over all layers) or ``"layer"`` (the ratio in each layer). Masks only
    shrink and are held by :mod:`sciprune.masks` through later training.

    ``compensate`` decides the bias shifts (elimination-compensation, Ballini et al. 2026): ``None``
    (default) applies the criterion's own (``ec``, ``ec-exact``; none for the others); ``True``
    applies EC shifts whatever the criterion (its own if it has them, else
    :func:`sciprune.criteria.ec.compensation_shifts` of the dense model, which needs ``data``);
    ``False`` applies none, even for ``ec``, which separates a ranking from its compensation. Each
    bias gets the summed shifts of the weights removed from its row, computed before the removal.
    """
    ratio = check_ratio(ratio)
    if compensate not in (None, True, False):
        raise SciPruneError(f"compensate must be None (the criterion's own), True or False, got {compensate!r}")
    if compensate is True and data is None:
        raise SciPruneError(
            "compensate=True computes elimination-compensation bias shifts from data; pass data=(X, Y) "
            "(the training set) or use compensate=None"
        )
    result = score_result(model, method, data, **options)
    shifts = None if compensate is False else result.bias_shifts
    if compensate is True and not shifts:
        from .criteria.ec import compensation_shifts

        device, dtype = _model_device_dtype(model)
        batches = as_batches(data, device=device, dtype=dtype, batch_size=options.get("batch_size"))
        generator = torch.Generator().manual_seed(int(options.get("seed", 0)))
        shifts = compensation_shifts(model, batches, list(result.scores), generator)
    before = get_masks(model, names=list(result.scores))
    keep = select(result.scores, ratio, scope=scope, masks=before)
    if shifts:
        removed = {n: before[n] & ~keep[n] for n in keep}
        _apply_bias_shifts(model, shifts, removed)
    set_masks(model, keep)
    total = sum(m.numel() for m in keep.values())
    pruned = sum(int((~m).sum()) for m in keep.values())
    return PruneReport(method, ratio, scope, pruned, total, sparsity(model), compensated=bool(shifts))
