"""A study's scoring cache: each method scores a dense network once, its variants share the scores.

A study prunes one dense network with several methods, each with and without elimination-compensation
shifts, at several ratios. :class:`Planner` scores it once per method (:func:`sciprune.plan`) and
derives the variants from those scores; ``sciprune run`` and ``sciprune sweep`` both use it, so their
numbers agree. It is study orchestration, not a library entry point, hence its own module.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import torch
from torch import nn

from .checks import check_seed
from .errors import SciPruneError
from .pruning import PrunePlan, PruneReport, _check_model, apply_plan, ec_shifts, plan

__all__ = ["Planner", "pruned_copy"]


class Planner:
    """Plans for one model, each method scored once: ``planner(method, compensate)`` -> :class:`PrunePlan`.

    The variants of a method share its scores: ``compensate=False`` drops its shifts, ``True`` adds the
    elimination-compensation shifts of the model (computed once, for all methods) when it has none.
    ``options`` maps a method to its criterion options. Used by ``sciprune run`` and ``sciprune sweep``.
    """

    def __init__(self, model: nn.Module, data, *, seed: int = 0, options: dict[str, dict] | None = None) -> None:
        _check_model(model)
        self.model, self.data, self.seed, self.options = model, data, check_seed(seed), dict(options or {})
        self._plans: dict[str, PrunePlan] = {}
        self._ec_shifts: dict[str, torch.Tensor] | None = None

    def __call__(self, method: str, compensate: bool | None = None) -> PrunePlan:
        if compensate is not None and not isinstance(compensate, bool):
            raise SciPruneError(f"compensate must be None (the criterion's own), True or False, got {compensate!r}")
        if method not in self._plans:
            self._plans[method] = plan(self.model, method, self.data, seed=self.seed, **self.options.get(method, {}))
        base = self._plans[method]
        if compensate is False:
            return replace(base, shifts=None)
        if compensate is True and not base.shifts:
            if self._ec_shifts is None:
                self._ec_shifts = ec_shifts(self.model, self.data, seed=self.seed)
            return replace(base, shifts=self._ec_shifts)
        return base


def pruned_copy(planner: Planner, method: str, compensate: bool | None, ratio: float, *, scope: str,
                schedule: dict | None = None) -> tuple[nn.Module, PruneReport]:
    """A copy of the planner's dense network pruned to ``ratio`` by one variant of a study: the one
    prune step ``sciprune run`` and ``sciprune sweep`` share. One-shot (the default) applies the
    planner's cached scores; a multi-step ``schedule`` re-scores the copy at every step
    (:func:`sciprune.prune_scheduled`). Returns the copy and the report of its last step."""
    from .procedure import prune_scheduled
    from .schedules import OneShot, parse_schedule

    sched = parse_schedule(schedule or {"kind": "one-shot"})
    model = copy.deepcopy(planner.model)
    if isinstance(sched, OneShot):
        return model, apply_plan(model, planner(method, compensate), ratio, scope=scope)
    reports = prune_scheduled(model, method, ratio, planner.data, schedule=sched, scope=scope, compensate=compensate,
                              seed=planner.seed, **planner.options.get(method, {}))
    return model, reports[-1]

