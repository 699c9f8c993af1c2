"""Prune with any criterion under a pruning schedule (:mod:`sciprune.schedules`).

Each step re-scores the *current*, partly pruned model with :func:`sciprune.plan` and applies the
step's sparsity with :func:`sciprune.apply_plan`: already-pruned weights rank below every live one
(:mod:`sciprune.selection`), so masks only shrink and the step's sparsity counts all weights. With no
training between steps this is Laurent et al.'s (2020) locality; with one step it is
:func:`sciprune.prune` exactly.

With a neuron criterion (granularity ``"neuron"``, :mod:`sciprune.neurons`) every target and step is a
*neuron* sparsity (the fraction of the scored hidden neurons removed) with the same rounding rule, so
the schedules reach their target neuron count exactly; a target that would empty a hidden layer is
refused before the first step.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .checks import check_choice
from .criteria import granularity_of
from .errors import SciPruneError
from .neurons import alive_neurons, check_neuron_target, select_neurons
from .pruning import PruneReport, apply_plan, plan
from .schedules import Cubic, Iterative, OneShot, Schedule, check_target, parse_schedule
from .selection import SCOPES

__all__ = ["prune_scheduled", "GradualPruning"]


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
    weights per level). Cubic prunes during training: use :class:`GradualPruning` as a hook of :func:`sciprune.fit`.
    ``on_step(model, k, report)``, if given, is called after step k is applied (before any training),
    e.g. to evaluate or record each step.
    Every argument is checked before the first scoring; a later step that fails leaves the steps done.
    With a neuron criterion, ``target`` and the steps are neuron sparsities and ``report.pruned`` counts
    neurons; a target that would empty a hidden layer is refused before any step (for global scope by
    the first scoring's ranking at the target; a re-scored later step may still be refused then).
    """
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    target = check_target(target)
    schedule = parse_schedule(schedule)
    check_choice(scope, SCOPES, "scope")
    if isinstance(schedule, Cubic):
        raise SciPruneError("schedule 'cubic' updates masks during training: pass "
                            "hooks=[sciprune.GradualPruning(method, target, data, schedule=...)] to sciprune.fit; "
                            "prune_scheduled runs 'one-shot', 'multi-step' and 'iterative'")
    if isinstance(schedule, Iterative):
        if not callable(train_between):
            raise SciPruneError("schedule 'iterative' retrains between levels: pass train_between=f(model, level) "
                                f"(e.g. a call to sciprune.fit), got {train_between!r}; or use 'multi-step'")
    elif train_between is not None:
        raise SciPruneError(f"train_between is for the 'iterative' schedule; schedule {schedule.name!r} has no "
                            "training between its steps")

    if on_step is not None and not callable(on_step):
        raise SciPruneError(f"on_step must be a function (model, step, report), got {on_step!r}")
    neuron = granularity_of(method) == "neuron"
    if neuron:
        check_neuron_target(model, target, scope=scope, names=options.get("names"))

    first = plan(model, method, data, compensate=compensate, **options)
    if neuron:  # the ranking at the target must leave every hidden layer a neuron (computes masks only)
        select_neurons(first.scores, target, scope=scope, alive=alive_neurons(model, list(first.scores)))
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


class GradualPruning:
    """A :func:`sciprune.fit` hook that prunes during training under a :class:`~sciprune.schedules.Cubic`
    schedule (Zhu & Gupta 2017): at the optimiser steps t0 + k dt (k = 0..n) the model is re-scored with
    ``method`` and pruned to s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, s_f = ``target``; masks only
    shrink and are held from the next step on, with the optimiser state of newly pruned weights zeroed.

    An update due at step 0 is made after the first optimiser step (s_i, usually 0). ``reports``: one
    :class:`~sciprune.pruning.PruneReport` per update made (per update and member in the ensemble engine,
    where every member is scored on ``data``), ``steps``: the optimiser step of each update.
    Training that ends before the last update raises :class:`SciPruneError` at its last epoch.
    Other arguments as in :func:`prune_scheduled` (``scope``, ``compensate``, criterion options).
    With a neuron criterion the sparsities are neuron sparsities; a target that would surely empty a
    hidden layer (:func:`sciprune.neurons.check_neuron_ratio`) is refused at the first optimiser step.
    """

    def __init__(self, method: str, target: float, data=None, *, schedule: Cubic | dict, scope: str = "global",
                 compensate: bool | None = False, **options) -> None:
        schedule = parse_schedule(schedule)
        if not isinstance(schedule, Cubic):
            raise SciPruneError(f"GradualPruning runs the 'cubic' schedule, got {schedule.name!r}; "
                                "use prune_scheduled for the others")
        self.schedule = schedule.resolve(target)
        self.method, self.data, self.scope = method, data, check_choice(scope, SCOPES, "scope")
        self.compensate, self.options = compensate, options
        self.steps: list[int] = []
        self.reports: list[PruneReport] = []
        self._pending = list(zip(self.schedule.update_steps(), self.schedule.targets(target)))
        self._unchecked = granularity_of(method) == "neuron"

    def after_step(self, state) -> None:
        """Make the update due at or before this step (the latest, if several are due)."""
        if self._unchecked:
            for model in state.members:
                check_neuron_target(model, self.schedule.final, scope=self.scope, names=self.options.get("names"))
            self._unchecked = False
        due = [u for u in self._pending if u[0] <= state.step]
        if not due:
            return
        del self._pending[: len(due)]
        ratio = due[-1][1]
        for model in state.members:  # one model under fit; every member of an ensemble (same data)
            step_plan = plan(model, self.method, self.data, compensate=self.compensate, **self.options)
            self.reports.append(apply_plan(model, step_plan, ratio, scope=self.scope))
        self.steps.append(state.step)

    def end_of_epoch(self, state) -> None:
        if state.epoch >= state.epochs and self._pending:
            raise SciPruneError(
                f"schedule 'cubic': training ended at optimiser step {state.step} but its last mask update is "
                f"at step {self._pending[-1][0]}; train longer or lower start_step, n_updates or every")

