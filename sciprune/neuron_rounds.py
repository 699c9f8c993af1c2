"""Neuron pruning in rounds while training, the network compacted after every round: Algorithm 2 of
Ebrahimi & Klabjan 2021 (HGNP, arXiv 2111.08577), with any neuron criterion.

    train pre_epochs;  repeat { score; remove the P lowest neurons; compact; train between_epochs }
    until the target neuron sparsity;  fine-tune finetune_epochs.

``scope = "global"`` (the paper's): each round removes the P lowest-scored neurons of all hidden layers;
a round that would empty a hidden layer is refused (:func:`sciprune.neurons.select_neurons`).
``scope = "layer"``: round k brings every hidden layer l to ``floor(s_k n_l + 1/2)`` neurons removed of its
``n_l``, with ``s_k = min(target, (k + 1) P / N0)``, the lowest-scored of the layer first: the same share
of every layer, never emptying one below the target's count.

Every training goes on with ONE optimiser whose state follows the shrinking network
(:func:`sciprune.compact_training.compact_in_training`), with a constant learning rate; with a
:class:`sciprune.flatness.FlatnessPenalty` hook every training is on HGNP's F (the paper's pre-training,
between-round training and fine-tuning alike), without one on the plain loss (``mu = 0`` in training:
the paper's first ablation). The last round removes what is left to reach ``floor(target N0 + 1/2)`` of
the N0 hidden neurons of the starting network, so the final count is exact. Each round's scores are
taken on the compact network with the criterion's options and the seed ``config.seed + round``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, replace
from typing import Callable

import torch
from torch import nn

from .checks import SEED_LIMIT, check_choice, check_int
from .compact_training import compact_in_training
from .criteria import granularity_of
from .errors import SciPruneError
from .neurons import check_neuron_target, hidden_layers
from .pruning import apply_plan, plan
from .schedules import check_target
from .selection import SCOPES
from .training import History, TrainConfig, _make_optimizer, fit

__all__ = ["Rounds", "RoundsResult", "prune_in_rounds", "rounds_goal"]


@dataclass(frozen=True)
class Rounds:
    """Algorithm 2's schedule: ``per_round`` neurons removed per round (P), ``pre_epochs`` of training
    before the first round (T_pre), ``between_epochs`` after each round but the last (T_b) and
    ``finetune_epochs`` after the last (T_f)."""

    per_round: int
    pre_epochs: int = 0
    between_epochs: int = 1
    finetune_epochs: int = 0
    scope: str = "global"

    def __post_init__(self) -> None:
        check_int(self.per_round, "rounds.per_round (neurons removed per round)", lo=1)
        check_choice(self.scope, SCOPES, "rounds.scope")
        for what in ("pre_epochs", "between_epochs", "finetune_epochs"):
            check_int(getattr(self, what), f"rounds.{what}", lo=0)

    @classmethod
    def from_dict(cls, d, *, where: str = "rounds") -> "Rounds":
        """A :class:`Rounds` from a case-file table; unknown keys refused in one line."""
        if not isinstance(d, dict):
            raise SciPruneError(f"{where} must be a table {{per_round, pre_epochs, between_epochs, finetune_epochs}}, "
                                f"got {d!r}")
        known = {"per_round", "pre_epochs", "between_epochs", "finetune_epochs", "scope"}
        bad = sorted(set(d) - known)
        if bad or "per_round" not in d:
            raise SciPruneError(f"{where}: unknown key(s) {bad}; expected per_round (required), pre_epochs, "
                                "between_epochs, finetune_epochs, scope" if bad else f"{where}.per_round is required "
                                "(neurons removed per round)")
        return cls(**d)


@dataclass
class RoundsResult:
    """What :func:`prune_in_rounds` made: ``model`` (the compact network), ``kept`` (per hidden layer of the
    starting network, by its weight name: the indices of the neurons kept, in order), ``removed`` and
    ``total`` (hidden neurons removed, and of the starting network), ``widths`` (the hidden widths after
    each round) and ``histories`` (one per training, in order)."""

    model: nn.Module
    kept: dict[str, torch.Tensor] = field(default_factory=dict)
    removed: int = 0
    total: int = 0
    widths: list[list[int]] = field(default_factory=list)
    histories: list[History] = field(default_factory=list)

    @property
    def sparsity(self) -> float:
        """Neuron sparsity reached: removed / total hidden neurons of the starting network."""
        return self.removed / self.total if self.total else 0.0

    def provenance(self) -> dict:
        """JSON-safe: the neurons of the starting network kept per hidden layer, and the widths per round."""
        return {"kept": {n: [int(i) for i in k] for n, k in self.kept.items()}, "widths": self.widths}


def prune_in_rounds(model: nn.Module, method: str, target: float, data, *, rounds: Rounds, config: TrainConfig,
                    hooks: list | None = None, val: tuple | None = None,
                    on_round: Callable[[nn.Module, int], object] | None = None, **options) -> RoundsResult:
    """Algorithm 2 on a copy of ``model`` (left as it was) to neuron sparsity ``target`` with the neuron
    criterion ``method`` (and its ``options``), global ranking; returns the compact network and its record.

    ``config``: the optimiser, learning rate (``constant`` schedule), batch size and seed of every training;
    its ``epochs`` is replaced by the phase's. ``hooks``: given to every training (e.g.
    ``[FlatnessPenalty(mu, K)]``). ``on_round(model, k)`` is called after round k's compaction.
    """
    if not isinstance(rounds, Rounds):
        raise SciPruneError(f"rounds must be a sciprune.neuron_rounds.Rounds, got {type(rounds).__name__}")
    if granularity_of(method) != "neuron":
        raise SciPruneError(f"method {method!r} scores weights; rounds of neuron pruning need a neuron criterion "
                            "(taylor-neuron, hgnp, neuron-magnitude)")
    if config.lr_schedule != "constant" or config.start_step:
        raise SciPruneError(f"rounds train with one optimiser throughout: lr_schedule must be 'constant' and "
                            f"start_step 0, got {config.lr_schedule!r}, {config.start_step}")
    target = check_target(target)
    check_neuron_target(model, target, scope=rounds.scope)
    net = copy.deepcopy(model)
    layers = [h.weight for h in hidden_layers(net)]
    sizes = [h.size for h in hidden_layers(net)]
    total = sum(sizes)
    goal = rounds_goal(sizes, target, rounds.scope)
    kept = [torch.arange(h.size) for h in hidden_layers(net)]
    opt = _make_optimizer(net.parameters(), config)
    out = RoundsResult(net, total=total)
    phase = 0

    def train(epochs: int) -> None:
        nonlocal phase
        if epochs:
            cfg = replace(config, epochs=epochs, seed=(config.seed + phase) % SEED_LIMIT)
            out.histories.append(fit(out.model, data, cfg, hooks=hooks, val=val, optimizer=opt))
        phase += 1

    train(rounds.pre_epochs)
    removed, k = 0, 0
    while removed < goal:
        seed = (config.seed + k) % SEED_LIMIT
        step_plan = plan(out.model, method, _training_rows(data), seed=seed, **options)
        if rounds.scope == "global":
            apply_plan(out.model, step_plan, min(rounds.per_round, goal - removed) / (total - removed), scope="global")
        else:
            share = min(target, (k + 1) * rounds.per_round / total)
            for name, n0, alive in zip(step_plan.scores, sizes, kept):
                drop = math.floor(share * n0 + 0.5) - (n0 - int(alive.numel()))
                if drop > 0:
                    one = replace(step_plan, scores={name: step_plan.scores[name]})
                    apply_plan(out.model, one, drop / int(alive.numel()), scope="layer")
        out.model, opt, idx = compact_in_training(out.model, opt)
        kept = [old[i.cpu()] for old, i in zip(kept, idx)]
        removed = total - sum(int(i.numel()) for i in kept)
        out.widths.append([int(i.numel()) for i in kept])
        if on_round is not None:
            on_round(out.model, k)
        k += 1
        train(rounds.between_epochs if removed < goal else rounds.finetune_epochs)
    if goal == 0:
        train(rounds.finetune_epochs)
    out.kept, out.removed = dict(zip(layers, kept)), removed
    return out


def rounds_goal(sizes: list[int], target: float, scope: str) -> int:
    """Hidden neurons removed in all at the end: ``floor(target N0 + 1/2)`` of the ``N0 = sum(sizes)``
    (global), or the sum over layers of ``floor(target n_l + 1/2)`` (layer)."""
    if scope == "global":
        return math.floor(target * sum(sizes) + 0.5)
    return sum(math.floor(target * n + 0.5) for n in sizes)


def _training_rows(data):
    """The training pairs of ``data`` (a TaskData or ``(X, Y)``) for scoring."""
    from .training import _resolve

    X, Y, _, _ = _resolve(data, None)
    return (X, Y)
