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

A variant may carry a :class:`Procedure` (case files: ``[prune.procedures.NAME]``): its own schedule,
pruning during the training from the initial weights (``start = "init"``: gradual magnitude pruning),
rewinding the kept weights to the dense training's step k after every step (lottery tickets), or a
control that takes another variant's final mask onto new initial weights or draws a random mask with
its counts (Liu et al. 2019; open_lth), or LOBSTER's training with thresholding capped at the variant's
ratio (:mod:`sciprune.study_lobster`). Trainings of one round with the same settings are one call.
Variants, procedures and their checks live in :mod:`sciprune.variants` (re-exported here).

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
from typing import Callable, Sequence

from torch import nn

from .checks import SEED_LIMIT
from .errors import SciPruneError
from .masks import get_masks, prunable_names, set_masks, sparsity
from .planner import Planner
from .procedure import GradualPruning
from .pruning import PruneReport, apply_plan, plan
from .schedules import Cubic, Iterative, OneShot, Schedule, check_keep_steps, kept_steps
from .study_lobster import StudyLobster
from .study_trainers import PerMember, Trainer, ensemble_trainer, sequential_trainer  # noqa: F401 (re-exported)
from .training import History, TrainConfig
from .variants import (CONTROLS, REINIT_SEED_OFFSET, STARTS, Procedure, Variant,  # noqa: F401 (re-exported)
                       check_cubic_fits, check_procedure, control_source_ok)

__all__ = ["Variant", "Procedure", "StepRecord", "Outcome", "Trainer", "prune_and_train", "sequential_trainer",
           "ensemble_trainer", "check_cubic_fits", "check_procedure", "PerMember", "REINIT_SEED_OFFSET"]

Metrics = dict[str, float]
Evaluate = Callable[[nn.Module], Metrics]


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
    provenance: dict | None = None

    def record(self, keep) -> dict:
        """The plain (JSON-safe) record of a study: ``pruned``, ``finetuned``, ``sparsity``, and
        ``steps`` (step number from 1 -> its record) for the kept steps when the case keeps any."""
        rec = {"pruned": self.pruned, "finetuned": self.finetuned, "sparsity": float(self.report.achieved)}
        if self.provenance is not None:  # a compacted network: the neurons of the starting network it kept
            rec["provenance"] = self.provenance
        kept = kept_steps(keep, len(self.steps))
        if keep != "last":
            rec["steps"] = {str(k + 1): {"sparsity": self.steps[k].sparsity, "pruned": self.steps[k].pruned,
                                         "trained": self.steps[k].trained, "train_loss": self.steps[k].train_loss}
                            for k in kept}
        return rec


class _Stepper:
    """A variant's network pruned step by step under its schedule."""

    def __init__(self, planner: Planner, variant: Variant, schedule: Schedule, scope: str, model: nn.Module) -> None:
        self.variant, self.scope, self.planner, self.schedule = variant, scope, planner, schedule
        self.model = model
        self.report: PruneReport | None = None
        self.rounds_result = None  # a rounds variant's record (sciprune.neuron_rounds.RoundsResult)
        if isinstance(schedule, Iterative) and scope == "global":
            total = sum(s.numel() for s in self.first().scores.values())
            self.targets = schedule.targets(variant.ratio, total=total)
        else:
            self.targets = schedule.targets(variant.ratio)
        self.steps = [StepRecord(math.nan) for _ in self.targets]

    @property
    def proc(self) -> Procedure:
        return self.variant.procedure

    @property
    def options(self) -> dict:
        """The criterion options of every scoring step: the procedure's own, else the study's for the method."""
        return self.proc.criterion_options(self.planner.options, self.variant.method)

    def first(self):
        """The dense network's plan for this variant (cached by the planner): step 0's scores."""
        return self.planner(self.variant.method, self.variant.compensate, self.options)

    def prune(self, k: int) -> PruneReport:
        p = self.first() if k == 0 else plan(self.model, self.variant.method, self.planner.data,
                                           compensate=self.variant.compensate, seed=self.planner.seed, **self.options)
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
                                 compensate=v.compensate, seed=planner.seed, **stepper.options)
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


class _Study:
    """What :func:`prune_and_train` shares between its variants: settings, the dense network's
    snapshots and the trainer."""

    def __init__(self, planner, scope, finetune, train_config, train, evaluate, keep, init, snapshots) -> None:
        self.planner, self.scope, self.finetune, self.train_config = planner, scope, finetune, train_config
        self.train, self.evaluate, self.keep, self.init, self.snapshots = train, evaluate, keep, init, snapshots

    def base(self, proc: Procedure) -> TrainConfig:
        """The settings of the trainings after a variant's pruning steps (LOBSTER: evaluated every epoch)."""
        if proc.rewind is not None:
            return replace(self.train_config, start_step=proc.rewind)
        cfg = self.train_config if (proc.start == "init" or proc.control) else self.finetune
        return replace(cfg, eval_every=1) if proc.lobster is not None else cfg

    def rewind(self, s: _Stepper) -> None:
        from .lottery_rewind import rewind

        if s.proc.rewind is not None:
            rewind(s.model, self.snapshots[s.proc.rewind])

    def run(self, items: list[tuple[_Stepper, TrainConfig, list | None, str]], *, final: bool) -> list[History]:
        """Train ``items`` = [(stepper, config, hooks, name)], one trainer call per distinct config."""
        out: list[History | None] = [None] * len(items)
        groups: dict[TrainConfig, list[int]] = {}
        for i, (_, cfg, _, _) in enumerate(items):
            groups.setdefault(cfg, []).append(i)
        for cfg, idx in groups.items():
            hists = self.train([items[i][0].model for i in idx], cfg, [items[i][2] for i in idx], final=final,
                               names=[items[i][3] for i in idx])
            for i, h in zip(idx, hists):
                out[i] = h
        return out  # type: ignore[return-value]


def _control(study: _Study, v: Variant, ref: _Stepper) -> _Stepper:
    """A control's network: ``ref``'s final masks on new initial weights, or a random mask with their
    per-layer counts on the initial weights; one step, evaluated as just pruned."""
    from .lottery_rewind import random_mask, reinitialize

    seed = study.planner.seed
    if v.procedure.control == "widths":
        from .study_rounds import widths_network

        s = _Stepper(study.planner, v, OneShot(), study.scope, widths_network(study.init(), ref.model, seed))
        r = ref.report
        s.report = replace(r, method="widths")
        s.steps = [StepRecord(float(r.achieved), pruned=study.evaluate(s.model))]
        return s
    model = study.init()
    masks = get_masks(ref.model, names=prunable_names(ref.model))
    if v.procedure.control == "reinit":
        set_masks(model, masks)
        reinitialize(model, (seed + REINIT_SEED_OFFSET) % SEED_LIMIT)
    else:
        random_mask(model, masks, seed)
    s = _Stepper(study.planner, v, OneShot(), study.scope, model)  # one step, already made: its masks
    kept = get_masks(model, names=prunable_names(model))
    pruned, total = sum(int((~m).sum()) for m in kept.values()), sum(m.numel() for m in kept.values())
    s.report = PruneReport(v.procedure.control, v.ratio, study.scope, pruned, total, sparsity(model))
    s.steps = [StepRecord(float(s.report.achieved), pruned=study.evaluate(model))]
    return s


def prune_and_train(planner: Planner, variants: Sequence[Variant], *, schedule, scope: str, finetune: TrainConfig,
                    train: Trainer, evaluate: Evaluate, keep="last", train_config: TrainConfig | None = None,
                    init: Callable[[], nn.Module] | None = None,
                    snapshots: dict[int, dict] | None = None) -> list[Outcome]:
    """Prune a copy of ``planner.model`` for each of ``variants`` under its schedule (its procedure's, or
    ``schedule``), training with ``train`` where the schedule asks and fine-tuning with ``finetune``;
    evaluate with ``evaluate``.

    Procedures (:class:`Procedure`) also need ``train_config`` (the dense training's settings), ``init``
    (a function returning the dense network's initial weights, untrained) and ``snapshots`` (optimiser step
    k -> the dense training's state_dict after step k, for each rewinding k > 0). Returns one
    :class:`Outcome` per variant, in order (see the module docstring). ``keep``: the steps whose numbers
    are recorded (:func:`check_keep_steps`).
    """
    from .training import _resolve

    keep = check_keep_steps(keep)
    scheds = [check_procedure(v.procedure, schedule, where=f"procedure of {v.label!r}") for v in variants]
    n_train = int(_resolve(planner.data, None)[0].shape[0])
    special = [v.procedure for v in variants if replace(v.procedure, options=None) != Procedure()]
    if special and (train_config is None or init is None):
        raise SciPruneError("procedures (start, rewind, controls) need train_config and init")
    needed = {p.rewind for p in special if p.rewind} - set(snapshots or {})
    if needed:
        raise SciPruneError(f"rewinding to optimiser step(s) {sorted(needed)} needs the dense training's weights "
                            "there (snapshots)")
    study = _Study(planner, scope, finetune, train_config, train, evaluate, keep, init, dict(snapshots or {}))
    if init is not None:
        study.snapshots.setdefault(0, init().state_dict())
    for v, sched in zip(variants, scheds):
        if not v.procedure.control:
            check_cubic_fits(sched, study.base(v.procedure), n_train)
    steppers: dict[int, _Stepper] = {}
    rounds = {i for i, v in enumerate(variants) if v.procedure.rounds is not None}
    for i in rounds:
        steppers[i] = _rounds(study, variants[i])
    for i, (v, sched) in enumerate(zip(variants, scheds)):
        if not v.procedure.control and i not in rounds:
            model = init() if v.procedure.start == "init" else copy.deepcopy(planner.model)
            steppers[i] = _Stepper(planner, v, sched, scope, model)
    if not variants:
        return []
    names = {i: f"{v.label} r={v.ratio:g}" for i, v in enumerate(variants)}
    cubic = {i for i, s in steppers.items() if isinstance(s.schedule, Cubic)}
    lobsters = {i: _lobster(s, planner.data) for i, s in steppers.items() if s.proc.lobster is not None}
    stepped = [i for i in steppers if i not in cubic and i not in lobsters and i not in rounds]
    for k in range(max([len(steppers[i].targets) for i in stepped] or [0])):
        mid = []
        for i in stepped:
            s = steppers[i]
            if k >= len(s.targets):
                continue
            s.prune(k)
            if k == len(s.targets) - 1 or k in kept_steps(keep, len(s.targets)):
                s.steps[k].pruned = evaluate(s.model)
            if k < len(s.targets) - 1:
                cfg = study.base(s.proc) if s.proc.rewind is not None else (
                    replace(finetune, epochs=s.schedule.budget_epochs) if isinstance(s.schedule, Iterative) else None)
                if cfg is not None and cfg.epochs > 0:
                    study.rewind(s)
                    mid.append((s, cfg, None, f"{names[i]} level {k + 1}"))
        hists = study.run(mid, final=False)
        for (s, cfg, _, _), h in zip(mid, hists):
            s.steps[k].train_loss = _losses(h, cfg.epochs)
            if k in kept_steps(keep, len(s.targets)):
                s.steps[k].trained = evaluate(s.model)
    by_label = {(v.label, v.ratio): steppers[i] for i, v in enumerate(variants) if i in steppers}
    for i, v in enumerate(variants):
        if v.procedure.control:
            ref = by_label.get((v.procedure.of, v.ratio))
            if ref is None or not control_source_ok(v.procedure.control, ref.proc, ref.schedule):
                raise SciPruneError(f"procedure of {v.label!r}: of = {v.procedure.of!r} is not a variant of this study "
                                    f"at ratio {v.ratio:g} " + ("pruned in rounds" if v.procedure.control == "widths"
                                    else "pruned before its final training (not a control, lobster, rounds or cubic "
                                    "schedule, whose masks are made during that training)"))
            steppers[i] = _control(study, v, ref)
    items = []
    for i in range(len(variants)):
        if i in rounds:
            continue
        s = steppers[i]
        hooks = [_Cubic(s, s.schedule, planner, evaluate, keep)] if i in cubic else (
            [lobsters[i]] if i in lobsters else None)
        if i not in cubic:
            study.rewind(s)
        items.append((s, study.base(s.proc), hooks, names[i]))
    hists = study.run(items, final=True)
    for i, hook in lobsters.items():
        hook.finish(steppers[i], evaluate, scope)
    finals = iter(zip(items, hists))
    out = []
    for i in range(len(variants)):
        if i in rounds:
            s = steppers[i]
            n = int(s.proc.rounds.get("finetune_epochs", 0))
            hist = s.rounds_result.histories[-1] if n and s.rounds_result.histories else History()
            out.append(replace(_finish(s, hist, replace(study.base(s.proc), epochs=n), evaluate),
                               provenance=s.rounds_result.provenance()))
        else:
            (_, cfg, _, _), h = next(finals)
            out.append(_finish(steppers[i], h, cfg, evaluate))
    return out


def _rounds(study: _Study, v: Variant) -> _Stepper:
    """A rounds variant pruned and trained to the end (:mod:`sciprune.study_rounds`), as a one-step stepper."""
    from .study_rounds import run_rounds

    start = study.init() if v.procedure.start == "init" else copy.deepcopy(study.planner.model)
    options = v.procedure.criterion_options(study.planner.options, v.method)
    res, report, pruned = run_rounds(v, start, study.planner.data, study.base(v.procedure), options, study.evaluate)
    s = _Stepper(study.planner, v, OneShot(), "global", res.model)
    s.report, s.steps = report, [StepRecord(float(report.achieved), pruned=pruned)]
    s.rounds_result = res
    return s


def _lobster(s: _Stepper, data) -> StudyLobster:
    """The LOBSTER hook of ``s``, thresholding on the validation set of the study's ``data``."""
    from .training import _resolve

    val = _resolve(data, None)[2]
    if val is None or val[0] is None or len(val[0]) == 0:
        raise SciPruneError(f"procedure of {s.variant.label!r}: lobster's plateau test and bisection need a validation "
                            "set; the task has none (data.val_fraction = 0)")
    return StudyLobster(s.proc.lobster, val, s.variant.ratio, s.model)


def _finish(s: _Stepper, h: History, cfg: TrainConfig, evaluate: Evaluate) -> Outcome:
    """The outcome after the final training: the last step's records completed."""
    if s.report is None:  # a cubic schedule whose training ended before its first update
        raise SciPruneError(f"{s.variant.label} r={s.variant.ratio:g}: the schedule made no pruning step")
    last = s.steps[-1]
    last.trained, last.train_loss = evaluate(s.model), _losses(h, cfg.epochs)
    return Outcome(s.variant, s.model, s.report, s.steps, last.pruned, last.trained, h)
