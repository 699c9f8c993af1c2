"""The one procedure of a study: prune copies of a trained network under a schedule, evaluate, train.

For every variant (label, method, compensation, ratio) a copy of the dense network goes through the
steps of the case's pruning schedule (:mod:`sciprune.schedules`): score -> select -> apply
(:func:`sciprune.plan`, :func:`sciprune.apply_plan`), with training where the schedule asks for it:

- ``one-shot`` / ``multi-step``: every step pruned with no training between, re-scored at the partly
  pruned copy (step 0 reuses the dense network's scores of the :class:`~sciprune.planner.Planner`),
  then one fine-tuning;
- ``iterative``: each level but the last is followed by ``budget_epochs`` of training (the fine-tuning
  settings with that many epochs), the last by the fine-tuning;
- ``cubic``: the masks are updated during the fine-tuning (:class:`sciprune.GradualPruning`).

Variants advance in lockstep, so that every training of a round is one call of a *trainer*:
``sciprune run`` trains the models one after another with :func:`sciprune.fit`
(:func:`sequential_trainer`), ``sciprune sweep`` as one ensemble with
:func:`sciprune.ensemble.fit_many` (:func:`ensemble_trainer`); the two give the same numbers (to
float rounding). A new criterion or schedule needs no edit here.

What is recorded (:class:`Outcome`): the metrics just after the last step (``pruned``) and after the
last training (``finetuned``), the achieved sparsity, and for each step the case keeps
(``keep_steps``) its sparsity, its metrics just after pruning and after the training that follows it,
and that training's loss per epoch.
"""

from __future__ import annotations

import bisect
import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable, Protocol, Sequence

from torch import nn

from .errors import SciPruneError
from .planner import Planner
from .procedure import GradualPruning
from .pruning import PruneReport, apply_plan, plan
from .schedules import Cubic, Iterative, Schedule, check_keep_steps, kept_steps, parse_schedule
from .training import History, TrainConfig

__all__ = ["Variant", "StepRecord", "Outcome", "Trainer", "prune_and_train", "sequential_trainer",
           "ensemble_trainer", "check_cubic_fits", "PerMember"]

Metrics = dict[str, float]
Evaluate = Callable[[nn.Module], Metrics]


@dataclass(frozen=True)
class Variant:
    """One pruned network of a study: ``method`` (criterion), ``compensate`` (as in
    :func:`sciprune.prune`) at ``ratio``, named ``label`` in the results."""

    label: str
    method: str
    compensate: bool | None
    ratio: float


@dataclass
class StepRecord:
    """One schedule step: the sparsity it reached; the metrics just after it (``pruned``) and after the
    training that follows it (``trained``, None when none follows); that training's loss per epoch
    (``train_loss``, NaN at epochs not evaluated). Metrics are None for steps not kept."""

    sparsity: float
    pruned: Metrics | None = None
    trained: Metrics | None = None
    train_loss: list[float] | None = None


@dataclass
class Outcome:
    """A variant's pruned and trained copy, the report of its last step and its step records."""

    variant: Variant
    model: nn.Module
    report: PruneReport | None = None
    steps: list[StepRecord] = field(default_factory=list)
    pruned: Metrics | None = None
    finetuned: Metrics | None = None
    history: History | None = None

    def record(self, keep) -> dict:
        """The plain (JSON-safe) record of a study: ``pruned``, ``finetuned``, ``sparsity``, and
        ``steps`` (step number from 1 -> its record) for the kept steps when the case keeps any."""
        rec = {"pruned": self.pruned, "finetuned": self.finetuned, "sparsity": float(self.report.achieved)}
        kept = kept_steps(keep, len(self.steps))
        if keep != "last":
            rec["steps"] = {str(k + 1): {"sparsity": self.steps[k].sparsity, "pruned": self.steps[k].pruned,
                                         "trained": self.steps[k].trained, "train_loss": self.steps[k].train_loss}
                            for k in kept}
        return rec


class Trainer(Protocol):
    """Trains ``models`` in place with ``config``, each with its own hooks (None for none);
    ``final``: this is the last training of these models (their fine-tuning); ``names``: what each
    training is, for progress displays. One History each."""

    def __call__(self, models: list[nn.Module], config: TrainConfig, hooks: list[list | None], *,
                 final: bool, names: list[str]) -> list[History]: ...


def sequential_trainer(data, *, progress: Callable[[str], Callable | None] | None = None,
                       done: Callable[[], None] | None = None) -> Trainer:
    """A trainer calling :func:`sciprune.fit` model after model on ``data``. ``progress(name)`` gives
    the ``fit`` progress callback of a training; ``done()`` is called after each final training."""
    from .training import fit

    def train(models, config, hooks, *, final, names):
        out = []
        for model, h, name in zip(models, hooks, names):
            out.append(fit(model, data, config, hooks=h, progress=progress(name) if progress else None))
            if final and done is not None:
                done()
        return out

    return train


def ensemble_trainer(data, *, max_members: int | None = None) -> Trainer:
    """A trainer calling :func:`sciprune.ensemble.fit_many` once for all models (same data), each
    model's hooks given to it alone (:class:`PerMember`)."""
    from .ensemble import fit_many

    def train(models, config, hooks, *, final, names):
        per = None if all(not h for h in hooks) else [PerMember(hooks)]
        return fit_many(models, data, config, max_members=max_members, hooks=per)

    return train


class _One:
    """The state of one member as a hook of that member alone sees it (``members``, ``step``, ``epoch``...)."""

    def __init__(self, state, member: nn.Module, index: int) -> None:
        self._state, self.members, self.model, self.indices = state, [member], member, [index]

    def __getattr__(self, name):
        return getattr(self._state, name)


class PerMember:
    """One ensemble hook that gives each member its own hooks: ``hooks[i]`` (a list, or None) for the
    member at position i of the models trained (``state.indices``). Such a hook sees a state whose
    ``members`` is that member alone; ``stop`` set by one ends the training of the group."""

    EVENTS = ("after_backward", "after_step", "end_of_epoch")

    def __init__(self, hooks: Sequence[list | None]) -> None:
        self.hooks = [list(h or []) for h in hooks]
        for event in self.EVENTS:
            if any(getattr(h, event, None) is not None for hs in self.hooks for h in hs):
                setattr(self, event, self._caller(event))

    def _caller(self, event: str):
        def call(state) -> None:
            for member, index in zip(state.members, state.indices):
                for h in self.hooks[index]:
                    fn = getattr(h, event, None)
                    if fn is not None:
                        one = _One(state, member, index)
                        fn(one)
                        if one.__dict__.get("stop"):
                            state.stop = True

        return call


def check_cubic_fits(schedule: Schedule, config: TrainConfig, n_train: int) -> None:
    """A cubic schedule's last mask update must come before the fine-tuning ends: t0 + n dt <= its
    optimiser steps (epochs x ceil(n_train / batch_size)); checked before training starts."""
    if not isinstance(schedule, Cubic):
        return
    per_epoch = 1 if config.batch_size is None else math.ceil(n_train / min(int(config.batch_size), n_train))
    total = int(config.epochs) * per_epoch
    last = schedule.update_steps()[-1]
    if last > total:
        raise SciPruneError(f"prune.schedule: the cubic schedule's last mask update is at optimiser step {last} "
                            f"(start_step + n_updates x every) but the fine-tuning takes {total} steps "
                            f"({config.epochs} epochs x {per_epoch}); lower start_step, n_updates or every, or "
                            "fine-tune longer")
    if config.patience is not None:
        raise SciPruneError("prune.schedule: the cubic schedule updates masks during the fine-tuning, which early "
                            "stopping (finetune.patience) could end before the last update; unset finetune.patience")


class _Stepper:
    """A copy of the dense network pruned step by step under ``schedule`` for one variant."""

    def __init__(self, planner: Planner, variant: Variant, schedule: Schedule, scope: str) -> None:
        self.variant, self.scope, self.planner = variant, scope, planner
        self.model = copy.deepcopy(planner.model)
        self.report: PruneReport | None = None
        if isinstance(schedule, Iterative) and scope == "global":
            total = sum(s.numel() for s in self.first().scores.values())
            self.targets = schedule.targets(variant.ratio, total=total)
        else:
            self.targets = schedule.targets(variant.ratio)
        self.steps = [StepRecord(math.nan) for _ in self.targets]

    def first(self):
        """The dense network's plan for this variant (cached by the planner): step 0's scores."""
        return self.planner(self.variant.method, self.variant.compensate)

    def prune(self, k: int) -> PruneReport:
        p = self.first() if k == 0 else plan(self.model, self.variant.method, self.planner.data,
                                           compensate=self.variant.compensate, seed=self.planner.seed,
                                           **self.planner.options.get(self.variant.method, {}))
        self.report = apply_plan(self.model, p, self.targets[k], scope=self.scope)
        self.steps[k].sparsity = float(self.report.achieved)
        return self.report


def _losses(hist: History, epochs: int) -> list[float]:
    """A History's training losses over epochs 1..epochs (NaN where not evaluated)."""
    out = [math.nan] * epochs
    for e, v in zip(hist.epoch, hist.train_loss):
        if 1 <= e <= epochs:
            out[e - 1] = float(v)
    return out


class _Cubic:
    """GradualPruning for one variant that also records its steps and evaluates the member after the
    kept and last mask updates. Updates due at the same optimiser step are made as one (the latest),
    which then stands for each of them."""

    def __init__(self, stepper: _Stepper, schedule: Cubic, planner: Planner, evaluate: Evaluate, keep) -> None:
        v = stepper.variant
        self.gp = GradualPruning(v.method, v.ratio, planner.data, schedule=schedule, scope=stepper.scope,
                                 compensate=v.compensate, seed=planner.seed, **planner.options.get(v.method, {}))
        self.stepper, self.evaluate, self.done = stepper, evaluate, -1
        self.updates = self.gp.schedule.update_steps()
        self.record = set(kept_steps(keep, len(stepper.targets))) | {len(stepper.targets) - 1}

    def after_step(self, state) -> None:
        made = len(self.gp.reports)
        self.gp.after_step(state)
        if len(self.gp.reports) == made:
            return
        k = bisect.bisect_right(self.updates, state.step) - 1
        report = self.gp.reports[-1]
        for j in range(self.done + 1, k + 1):
            self.stepper.steps[j].sparsity = float(report.achieved)
        self.done, self.stepper.report = k, report
        if k in self.record:
            model = state.members[0]
            self.stepper.steps[k].pruned = self.evaluate(model)
            model.train()

    def end_of_epoch(self, state) -> None:
        self.gp.end_of_epoch(state)


def prune_and_train(planner: Planner, variants: Sequence[Variant], *, schedule, scope: str, finetune: TrainConfig,
                    train: Trainer, evaluate: Evaluate, keep="last") -> list[Outcome]:
    """Prune a copy of ``planner.model`` for each of ``variants`` under ``schedule``, training with
    ``train`` where the schedule asks and fine-tuning with ``finetune``; evaluate with ``evaluate``.

    Returns one :class:`Outcome` per variant, in order (see the module docstring for what each
    schedule does and records). ``keep``: the steps whose numbers are recorded
    (:func:`check_keep_steps`).
    """
    from .training import _resolve

    schedule = parse_schedule(schedule)
    keep = check_keep_steps(keep)
    check_cubic_fits(schedule, finetune, int(_resolve(planner.data, None)[0].shape[0]))
    steppers = [_Stepper(planner, v, schedule, scope) for v in variants]
    if not steppers:
        return []
    names = [f"{v.label} r={v.ratio:g}" for v in variants]
    if isinstance(schedule, Cubic):
        hooks = [[_Cubic(s, schedule, planner, evaluate, keep)] for s in steppers]
        hists = train([s.model for s in steppers], finetune, hooks, final=True, names=names)
        return _finish(steppers, hists, finetune, evaluate)

    between = replace(finetune, epochs=schedule.budget_epochs) if isinstance(schedule, Iterative) else None
    for k in range(max(len(s.targets) for s in steppers)):
        active = [s for s in steppers if k < len(s.targets)]
        for s in active:
            s.prune(k)
            if k == len(s.targets) - 1 or k in kept_steps(keep, len(s.targets)):
                s.steps[k].pruned = evaluate(s.model)
        mid = [(s, n) for s, n in zip(steppers, names) if k < len(s.targets) - 1]
        if between is not None and between.epochs > 0 and mid:
            hists = train([s.model for s, _ in mid], between, [None] * len(mid), final=False,
                          names=[f"{n} level {k + 1}" for _, n in mid])
            for (s, _), h in zip(mid, hists):
                s.steps[k].train_loss = _losses(h, between.epochs)
                if k in kept_steps(keep, len(s.targets)):
                    s.steps[k].trained = evaluate(s.model)
    hists = train([s.model for s in steppers], finetune, [None] * len(steppers), final=True, names=names)
    return _finish(steppers, hists, finetune, evaluate)


def _finish(steppers: list[_Stepper], hists: list[History], finetune: TrainConfig, evaluate: Evaluate) -> list[Outcome]:
    """The outcomes after the final training: the last step's records completed."""
    out = []
    for s, h in zip(steppers, hists):
        if s.report is None:  # a cubic schedule whose training ended before its first update
            raise SciPruneError(f"{s.variant.label} r={s.variant.ratio:g}: the schedule made no pruning step")
        last = s.steps[-1]
        last.trained, last.train_loss = evaluate(s.model), _losses(h, finetune.epochs)
        out.append(Outcome(s.variant, s.model, s.report, s.steps, last.pruned, last.trained, h))
    return out
