"""Prune with any criterion under a pruning schedule (:mod:`sciprune.schedules`).

Each step re-scores the *current*, partly pruned model with :func:`sciprune.plan` and applies the
step's sparsity with :func:`sciprune.apply_plan`: already-pruned weights rank below every live one
(:mod:`sciprune.selection`), so masks only shrink and the step's sparsity counts all weights. With no
training between steps this is Laurent et al.'s (2020) locality; with one step it is
:func:`sciprune.prune` exactly.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .batches import check_choice
from .errors import SciPruneError
from .pruning import PruneReport, apply_plan, plan
from .schedules import Cubic, Iterative, OneShot, Schedule, check_target, parse_schedule
from .selection import SCOPES

__all__ = ["prune_scheduled"]


def prune_scheduled(
    model: nn.Module,
    method: str,
    target: float,
    data=None,
    *,
    schedule: Schedule | dict | str = OneShot(),
    scope: str = "global",
    compensate: bool | None = None,
    train_between: Callable[[nn.Module, int], object] | None = None,
    on_step: Callable[[nn.Module, int, PruneReport], object] | None = None,
    **options,
) -> list[PruneReport]:
    """Prune ``model`` in place to sparsity ``target`` in the steps of ``schedule``; one report per step.

    Step k prunes to ``schedule.targets(target)[k]``, re-scoring the partly pruned model with ``method``
    (options ``seed``, ``batch_size``, ``names`` and the criterion's own, the same at every step) and
    applying the bias shifts of that scoring to the weights removed at that step (``compensate`` as in
    :func:`sciprune.prune`). ``report.ratio`` is the step's sparsity and ``report.pruned`` counts every
    pruned weight, so it equals ``floor(ratio * n + 0.5)`` of the pool (``n`` weights, or each layer's
    with ``scope="layer"``) unless the model came with more weights pruned.

    ``schedule``: a schedule object, or its dict / kind name (:func:`~sciprune.schedules.parse_schedule`).
    One-shot and multi-step need no training. Iterative needs ``train_between(model, level)``, called
    after each level but the last (the training after the last level is the caller's fine-tuning);
    with ``fraction`` and global scope its levels follow open_lth's count rule (ceil(f * remaining)
    weights per level). Cubic prunes during training and needs training hooks (not yet available).
    ``on_step(model, k, report)``, if given, is called after step k is applied (before any training),
    e.g. to evaluate or record each step.
    Every argument is checked before the first scoring; a later step that fails leaves the steps done.
    """
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = check_target(target)
    schedule = parse_schedule(schedule)
    check_choice(scope, SCOPES, "scope")
    if isinstance(schedule, Cubic):
        raise SciPruneError("schedule 'cubic' updates masks during training, which needs the training hooks "
                            "of sciprune.fit (not yet available); use 'one-shot', 'multi-step' or 'iterative'")
    if isinstance(schedule, Iterative):
        if not callable(train_between):
            raise SciPruneError("schedule 'iterative' retrains between levels: pass train_between=f(model, level) "
                                f"(e.g. a call to sciprune.fit), got {train_between!r}; or use 'multi-step'")
    elif train_between is not None:
        raise SciPruneError(f"train_between is for the 'iterative' schedule; schedule {schedule.name!r} has no "
                            "training between its steps")

    if on_step is not None and not callable(on_step):
        raise SciPruneError(f"on_step must be a function (model, step, report), got {on_step!r}")

    first = plan(model, method, data, compensate=compensate, **options)
    if isinstance(schedule, Iterative) and scope == "global":
        steps = schedule.targets(target, total=sum(s.numel() for s in first.scores.values()))
    else:
        steps = schedule.targets(target)
    reports: list[PruneReport] = []
    for k, ratio in enumerate(steps):
        step_plan = first if k == 0 else plan(model, method, data, compensate=compensate, **options)
        reports.append(apply_plan(model, step_plan, ratio, scope=scope))
        if on_step is not None:
            on_step(model, k, reports[-1])
        if train_between is not None and k < len(steps) - 1:
            train_between(model, k)
    return reports
