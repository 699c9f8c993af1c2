"""A study variant pruned in neuron rounds with compaction (``[prune.procedures.NAME] rounds = {...}``):
:func:`sciprune.neuron_rounds.prune_in_rounds` from the variant's start, with the flatness penalty when
the procedure has one, and the control ``"widths"`` (a dense network of its final widths from scratch).

A rounds variant runs on its own with :func:`sciprune.fit` (its network changes shape every round, so it
is never stacked with others in the ensemble engine): ``sciprune run`` and ``sciprune sweep`` give it the
same numbers. Its outcome: ``pruned`` = the metrics just after the last round's compaction, ``finetuned``
= after the fine-tuning epochs; the achieved sparsity is the neuron sparsity; its network is the compact
one, and the neurons kept per hidden layer are its provenance.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .activations import activation_of
from .checks import SEED_LIMIT
from .errors import SciPruneError
from .flatness import FlatnessPenalty
from .models import MLP, linear_chain
from .neuron_rounds import Rounds, RoundsResult, prune_in_rounds, rounds_goal
from .neurons import hidden_layers
from .pruning import PruneReport
from .training import TrainConfig
from .variants import REINIT_SEED_OFFSET, Variant

__all__ = ["run_rounds", "widths_network", "rounds_report"]


def _weights(model: nn.Module) -> int:
    return sum(lin.weight.numel() for lin in linear_chain(model))


def rounds_report(v: Variant, start: nn.Module, res: RoundsResult) -> PruneReport:
    """The variant's report: neurons removed of the starting network's hidden neurons; weights removed =
    the Linear weights the compaction took away."""
    w0, w1 = _weights(start), _weights(res.model)
    return PruneReport(v.method, v.ratio, "global", res.removed, res.total, {}, granularity="neuron",
                       neurons_pruned=res.removed, neurons_total=res.total, weights_pruned=w0 - w1, weights_total=w0)


def run_rounds(v: Variant, start: nn.Module, data, config: TrainConfig, options: dict,
               evaluate: Callable[[nn.Module], dict]) -> tuple[RoundsResult, PruneReport, dict]:
    """Prune ``start`` (a copy is made) as ``v``'s rounds procedure says with ``config``'s optimiser, learning
    rate (constant), batch size and seed; ``(result, report, metrics just after the last round)``."""
    proc = v.procedure
    if config.lr_schedule != "constant":
        raise SciPruneError(f"procedure of {v.label!r}: rounds train with one optimiser at a constant learning rate; "
                            f"the settings they use ([{'train' if proc.start == 'init' else 'finetune'}]) have "
                            f"lr_schedule = {config.lr_schedule!r}: set it to 'constant'")
    if config.patience is not None:
        raise SciPruneError(f"procedure of {v.label!r}: rounds train for fixed numbers of epochs; unset patience in "
                            f"[{'train' if proc.start == 'init' else 'finetune'}]")
    rounds = Rounds.from_dict(proc.rounds, where=f"procedures.{v.label}.rounds")
    hooks = None
    if proc.penalty is not None:
        hooks = [FlatnessPenalty(proc.penalty["mu"], proc.penalty["K"], proc.penalty.get("refresh", 1))]
    sizes = [h.size for h in hidden_layers(start)]
    left = sum(sizes) - rounds_goal(sizes, v.ratio, rounds.scope)  # hidden neurons after the last round
    pruned: dict = {}

    def on_round(model: nn.Module, k: int) -> None:
        if sum(h.size for h in hidden_layers(model)) == left:
            pruned.update(evaluate(model))
            model.train()

    res = prune_in_rounds(start, v.method, v.ratio, data, rounds=rounds, config=config,
                          hooks=hooks, on_round=on_round, **options)
    if not res.widths:  # no round (ratio 0): the network as trained
        pruned.update(evaluate(res.model))
    return res, rounds_report(v, start, res), pruned


def widths_network(init: nn.Module, compact: nn.Module, seed: int) -> nn.Module:
    """A new :class:`sciprune.MLP` of ``compact``'s hidden widths with ``init``'s inputs, outputs, activation,
    dtype and device, initialised from ``seed`` plus the controls' offset."""
    lins = linear_chain(init)
    act = next(activation_of(m).name for m in init if not isinstance(m, nn.Linear))
    widths = [h.size for h in hidden_layers(compact)]
    p = lins[0].weight
    net = MLP(lins[0].in_features, widths, lins[-1].out_features, act, seed=(seed + REINIT_SEED_OFFSET) % SEED_LIMIT)
    return net.to(device=p.device, dtype=p.dtype)
