"""LOBSTER as a procedure of a study (``[prune.procedures.NAME] lobster = {...}``).

The variant trains with the :class:`sciprune.lobster.Lobster` hook (``scaled = true``:
:class:`~sciprune.lobster.ScaledLobster`) from the initial weights with the ``[train]`` settings
(``start = "init"``, the authors' way) or from the trained dense network with the ``[finetune]``
settings (``start = "trained"``), evaluated on the task's validation split at every epoch
(``eval_every = 1``: the authors' plateau test reads every epoch). A study compares at its ratios, so
the hook runs with ``max_sparsity`` = the variant's ratio (no thresholding prunes beyond
K = floor(ratio n + 1/2) of the n Linear weights, and none happens once K are pruned) and with
``biases=False`` (the cap counts weights, as the study's ratio does; the authors also regularise and
threshold the biases): the two deviations from the authors' LOBSTER. The achieved sparsity may stay
below the ratio (the run ends first); it is recorded as it is, never topped up.

What is recorded: one step; ``pruned`` = the metrics of the network just after its last thresholding
that pruned (the starting network if none did), ``finetuned`` = after the training.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from .errors import SciPruneError
from .lobster import Lobster, ScaledLobster
from .masks import sparsity
from .pruning import PruneReport

__all__ = ["LOBSTER_KEYS", "check_lobster", "lobster_problem", "make_lobster", "StudyLobster"]

#: The keys of a case file's ``lobster = {...}`` table: the hook's options (``scaled``: use ScaledLobster,
#: whose scale decay is ``beta``).
LOBSTER_KEYS = ("lam", "twt", "pwe", "delta", "scaled", "beta")


def make_lobster(options: dict, **kwargs) -> Lobster:
    """The hook of ``options`` (a ``lobster`` table) with ``kwargs`` (val, max_sparsity, biases...)."""
    opts = dict(options)
    scaled = opts.pop("scaled", False)
    return (ScaledLobster if scaled else Lobster)(**opts, **kwargs)


def lobster_problem(options) -> tuple[str, str] | None:
    """What is wrong with a ``lobster`` table, as (key below it, or "" for the table; message), else None."""
    if not isinstance(options, dict):
        return "", f"lobster must be a table of the hook's options {list(LOBSTER_KEYS)}, got {type(options).__name__}"
    unknown = sorted(set(options) - set(LOBSTER_KEYS))
    if unknown:
        return "", f"unknown lobster key(s) {unknown}; allowed: {', '.join(LOBSTER_KEYS)}"
    scaled = options.get("scaled", False)
    if not isinstance(scaled, bool):
        return "scaled", f"scaled must be true (sciprune's scale-free lobster-scaled) or false, got {scaled!r}"
    if "beta" in options and not scaled:
        return "beta", "beta is the gradient-scale decay of lobster-scaled; set scaled = true or remove it"
    try:
        make_lobster(options)
    except SciPruneError as err:
        key = str(err).split(" ", 1)[0]
        return (key if key in LOBSTER_KEYS else ""), str(err)
    return None


def check_lobster(options, *, where: str = "lobster") -> dict:
    """``options`` if they build a hook, else a one-line :class:`SciPruneError` naming ``where``."""
    problem = lobster_problem(options)
    if problem is not None:
        raise SciPruneError(f"{where}: {problem[1]}")
    return options


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


class StudyLobster:
    """The LOBSTER hook of one study variant (``ratio`` its cap, ``val`` the task's validation set), which
    also keeps the parameters just after each thresholding that pruned, for the ``pruned`` stage."""

    reads_grad = True  # the hook reads .grad at after_step (see sciprune.study_trainers.PerMember)

    def __init__(self, options: dict, val: tuple, ratio: float, model: nn.Module) -> None:
        self.hook = make_lobster(options, val=val, max_sparsity=ratio, biases=False)
        self.name = self.hook.name
        self.snapshot = _params(model)

    def after_step(self, state) -> None:
        self.hook.after_step(state)

    def end_of_epoch(self, state) -> None:
        made = len(self.hook.events)
        self.hook.end_of_epoch(state)
        if any(e.pruned for e in self.hook.events[made:]):
            self.snapshot = _params(state.members[0])

    def finish(self, stepper, evaluate: Callable[[nn.Module], dict], scope: str) -> None:
        """After the training: ``stepper``'s report (the masked share of its Linear weights) and its one
        step, with the metrics of the network after the last thresholding as ``pruned``."""
        from .lobster_threshold import linear_names, pruned_weights

        model, v = stepper.model, stepper.variant
        pruned, total = pruned_weights(model, linear_names(model, biases=False))
        stepper.report = PruneReport(self.name, v.ratio, scope, pruned, total, sparsity(model))
        stepper.steps[0].sparsity = float(stepper.report.achieved)
        then = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in then.named_parameters():
                p.copy_(self.snapshot[n])
        stepper.steps[0].pruned = evaluate(then)
