"""What a study prunes: its variants (:class:`Variant`) and the procedures they follow (:class:`Procedure`),
with the checks that refuse a combination the study procedure (:func:`sciprune.engine.prune_and_train`)
cannot run, in one line, before any training. Re-exported from :mod:`sciprune.engine`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import SciPruneError
from .schedules import Cubic, Iterative, OneShot, Schedule, parse_schedule
from .training import TrainConfig

__all__ = ["Variant", "Procedure", "check_procedure", "check_cubic_fits", "control_source_ok", "REINIT_SEED_OFFSET", "STARTS", "CONTROLS"]

#: A control's new initial weights are drawn from the block's seed plus this (mod the seed limit), a
#: seed no dense network of a study with fewer seeds uses.
REINIT_SEED_OFFSET = 104_729
STARTS = ("trained", "init")
CONTROLS = ("reinit", "random-mask", "widths")


@dataclass(frozen=True)
class Procedure:
    """What a variant does besides scoring with its criterion (all optional; the default is the study's
    schedule on the trained dense network, then the fine-tuning).

    ``schedule``: its own pruning schedule (a dict, :func:`~sciprune.schedules.parse_schedule`).
    ``start``: ``"trained"`` (the trained dense network) or ``"init"`` (its initial weights, pruned
    during a training with the ``train`` settings: needs a cubic schedule; Zhu & Gupta's gradual
    magnitude pruning from scratch). ``rewind``: k; after every pruning step the kept weights go back to
    the dense training's weights after optimiser step k (0: the initial weights) and each training that
    follows is the dense training resumed at step k (``TrainConfig.start_step``): the lottery ticket
    (k = 0, Frankle & Carbin 2019) and weight rewinding (k > 0, Renda et al. 2020), as open_lth runs
    them; one-shot or iterative schedules with ``budget_epochs = 0``. ``control``: ``"reinit"`` (the final
    mask of variant ``of`` at the same ratio on new random initial weights, Liu et al. 2019) or
    ``"random-mask"`` (a random mask with that mask's per-layer counts on the initial weights, open_lth's
    ``randomly_prune``), trained with the ``train`` settings. ``lobster``: the options of a
    :class:`sciprune.lobster.Lobster` hook (``lam``, ``twt``, ``pwe``, ``delta``; ``scaled = True`` and
    ``beta`` for :class:`~sciprune.lobster.ScaledLobster`): the variant trains with it from ``start``
    (``"init"``: the ``train`` settings; ``"trained"``: the ``finetune`` settings), thresholded on the
    task's validation set and capped at the variant's ratio (:mod:`sciprune.study_lobster`).
    ``options``: the variant's criterion options (``locality``, ``examples``, ...), used at its every
    scoring step in place of the study's options of its method (None: those, ``[prune.options.<method>]``),
    so that one method runs with several settings side by side (Laurent et al. 2020's lambda grid).
    ``rounds``: neuron pruning in rounds with compaction, Algorithm 2 of HGNP (the keys of
    :class:`sciprune.neuron_rounds.Rounds`), from ``start`` (``"init"``: the initial weights, with the
    ``train`` settings; ``"trained"``: the trained network, with the ``finetune`` settings), whose
    optimiser and learning rate (constant) every round trains with; ``penalty``: ``{mu, K, refresh}`` of a
    :class:`sciprune.flatness.FlatnessPenalty` in all of those trainings (HGNP's F). The variant's
    network is then the compact one. Control ``"widths"``: a network of the final hidden widths of the
    rounds variant ``of``, initialised anew and trained with the ``train`` settings (the dense network of
    the same size from scratch).
    """

    schedule: dict | None = None
    start: str = "trained"
    rewind: int | None = None
    control: str | None = None
    of: str | None = None
    lobster: dict | None = None
    options: dict | None = None
    rounds: dict | None = None
    penalty: dict | None = None

    def criterion_options(self, study_options: dict[str, dict], method: str) -> dict:
        """The criterion options this procedure's scoring of ``method`` uses: its own, else the study's."""
        return dict(self.options) if self.options is not None else dict(study_options.get(method, {}))


@dataclass(frozen=True)
class Variant:
    """One pruned network of a study: ``method`` (criterion), ``compensate`` (as in
    :func:`sciprune.prune`) at ``ratio``, named ``label`` in the results, done as ``procedure`` says."""

    label: str
    method: str
    compensate: bool | None
    ratio: float
    procedure: Procedure = field(default_factory=Procedure)



def masks_before_final_training(proc: Procedure, schedule: Schedule) -> bool:
    """Whether a variant done as ``proc`` under ``schedule`` (its own or the study's) has its final masks
    before its final training: not a control, LOBSTER or a cubic schedule, whose masks are made during that
    training. What the variant a control takes its masks from (``of``) must be."""
    return not (proc.control or proc.lobster is not None or proc.rounds is not None or isinstance(schedule, Cubic))


def control_source_ok(control: str, ref: Procedure, schedule: Schedule) -> bool:
    """Whether a control of kind ``control`` may name variant ``ref`` (run under ``schedule``) as its ``of``:
    ``"widths"`` a rounds variant (its final widths), the others one whose masks are made before its final
    training (:func:`masks_before_final_training`)."""
    if control == "widths":
        return ref.rounds is not None
    return masks_before_final_training(ref, schedule)


def check_cubic_fits(schedule: Schedule, config: TrainConfig, n_train: int) -> None:
    """A cubic schedule's last mask update must come before the training it runs in (the fine-tuning,
    or the training from the initial weights) ends: t0 + n dt <= its optimiser steps (epochs x
    ceil(n_train / batch_size)); checked before training starts."""
    if not isinstance(schedule, Cubic):
        return
    per_epoch = 1 if config.batch_size is None else math.ceil(n_train / min(int(config.batch_size), n_train))
    total = int(config.epochs) * per_epoch
    last = schedule.update_steps()[-1]
    if last > total:
        raise SciPruneError(f"prune.schedule: the cubic schedule's last mask update is at optimiser step {last} "
                            f"(start_step + n_updates x every) but the training it runs in takes {total} steps "
                            f"({config.epochs} epochs x {per_epoch}); lower start_step, n_updates or every, or "
                            "train longer")
    if config.patience is not None:
        raise SciPruneError("prune.schedule: the cubic schedule updates masks during the fine-tuning, which early "
                            "stopping (finetune.patience) could end before the last update; unset finetune.patience")


def check_procedure(proc: Procedure, study_schedule, *, where: str = "procedure") -> Schedule:
    """The schedule ``proc`` runs (its own, else the study's), with every combination it cannot run
    refused in one line naming ``where``."""
    if not isinstance(proc, Procedure):
        raise SciPruneError(f"{where} must be a sciprune.engine.Procedure, got {type(proc).__name__}")
    sched = parse_schedule(proc.schedule if proc.schedule is not None else study_schedule)
    if proc.start not in STARTS:
        raise SciPruneError(f"{where}.start must be one of {list(STARTS)}, got {proc.start!r}")
    if proc.penalty is not None and proc.rounds is None:
        raise SciPruneError(f"{where}.penalty is the flatness penalty of the trainings of rounds; set rounds too")
    if proc.rounds is not None:
        _check_rounds(proc, where)
        return OneShot()
    if proc.lobster is not None:
        from .study_lobster import check_lobster

        check_lobster(proc.lobster, where=f"{where}.lobster")
        if (proc.schedule is not None or proc.rewind is not None or proc.control is not None or proc.of is not None
                or proc.options is not None):
            raise SciPruneError(f"{where}: lobster prunes by its own thresholding during one training; give it no "
                                "schedule, rewind, control, of or options")
        return OneShot()
    if proc.control is not None:
        if proc.control not in CONTROLS:
            raise SciPruneError(f"{where}.control must be one of {list(CONTROLS)}, got {proc.control!r}")
        if not isinstance(proc.of, str) or not proc.of:
            raise SciPruneError(f"{where}.of: a control names the variant whose final masks it takes")
        if proc.schedule is not None or proc.rewind is not None or proc.start != "trained" or proc.options is not None:
            raise SciPruneError(f"{where}: a control ({proc.control}) takes its masks from {proc.of!r}; give it no "
                                "schedule, rewind, start or options")
        return OneShot()
    if proc.options is not None and not isinstance(proc.options, dict):
        raise SciPruneError(f"{where}.options must be a dict of criterion options, got {type(proc.options).__name__}")
    if proc.of is not None:
        raise SciPruneError(f"{where}.of names the variant a control copies; set control too")
    if proc.start == "init" and not isinstance(sched, Cubic):
        raise SciPruneError(f"{where}.start = 'init' prunes during the training from the initial weights, which "
                            f"needs a cubic schedule; got {sched.name!r}")
    if proc.rewind is not None:
        if isinstance(proc.rewind, bool) or not isinstance(proc.rewind, int) or proc.rewind < 0:
            raise SciPruneError(f"{where}.rewind must be an optimiser step k >= 0, got {proc.rewind!r}")
        if not isinstance(sched, (OneShot, Iterative)):
            raise SciPruneError(f"{where}.rewind needs a one-shot or iterative schedule, got {sched.name!r}")
        if isinstance(sched, Iterative) and sched.budget_epochs:
            raise SciPruneError(f"{where}.schedule.budget_epochs: with rewind the training after each level is the "
                                "dense training resumed at step k; set budget_epochs = 0")
    return sched


def _check_rounds(proc: Procedure, where: str) -> None:
    """A rounds procedure: its table and penalty valid, nothing else that prunes or trains otherwise."""
    from .flatness import check_penalty_options
    from .neuron_rounds import Rounds

    Rounds.from_dict(proc.rounds, where=f"{where}.rounds")
    if proc.penalty is not None:
        if not isinstance(proc.penalty, dict) or not set(proc.penalty) <= {"mu", "K", "refresh"} \
                or not {"mu", "K"} <= set(proc.penalty):
            raise SciPruneError(f"{where}.penalty must be a table {{mu, K[, refresh]}}, got {proc.penalty!r}")
        check_penalty_options(proc.penalty["mu"], proc.penalty["K"], proc.penalty.get("refresh", 1),
                              where=f"{where}.penalty")
    if (proc.schedule is not None or proc.rewind is not None or proc.control is not None or proc.of is not None
            or proc.lobster is not None):
        raise SciPruneError(f"{where}: rounds prune neurons in their own rounds; give it no schedule, rewind, "
                            "control, of or lobster")
