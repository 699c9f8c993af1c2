"""Compaction in the training loop: make the network physically smaller and let the optimiser follow.

After a neuron-pruning step (:mod:`sciprune.neurons`) the removed neurons are masked but still computed.
:func:`compact_in_training` builds the smaller network (:func:`sciprune.compaction.compact_kept`, same
outputs) and an optimiser of the same class and hyper-parameters over its parameters whose state is the
old state restricted to the kept neurons: for ``W_l`` the rows of layer l's kept neurons and the columns
of layer l-1's, for ``b_l`` the entries of layer l's (momentum, Adam's moments, AdamW's, any tensor
shaped like its parameter); per-parameter scalars (Adam's ``step``) are copied. Training then goes on
exactly as it would have on the masked network, where the removed entries are zero and their state is
zeroed (:class:`sciprune.MaskedStep`): the kept entries see the same gradients and the same state.

L-BFGS keeps one flat history over all parameters, which has no per-neuron slicing: it is refused.
"""

from __future__ import annotations

import torch
from torch import nn

from .compaction import compact_kept
from .errors import SciPruneError
from .models import linear_chain

__all__ = ["compact_in_training", "follow_optimizer"]


def _slices(n_layers: int, kept: list[torch.Tensor]) -> list[tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Per Linear layer of the chain: (rows kept, columns kept) of its weight, None = all."""
    return [(kept[l] if l < n_layers - 1 else None, kept[l - 1] if l > 0 else None) for l in range(n_layers)]


def _take(value, param: torch.Tensor, rows, cols):
    """``value`` restricted to the kept rows/columns when it is shaped like ``param``, else a copy."""
    if not isinstance(value, torch.Tensor):
        return value
    if value.shape != param.shape:
        return value.clone()
    out = value
    if rows is not None:
        out = out.index_select(0, rows.to(out.device))
    if cols is not None and out.dim() == 2:
        out = out.index_select(1, cols.to(out.device))
    return out.clone()


@torch.no_grad()
def follow_optimizer(optimizer: torch.optim.Optimizer, old: nn.Module, new: nn.Module,
                     kept: list[torch.Tensor]) -> torch.optim.Optimizer:
    """An optimiser like ``optimizer`` (class, parameter groups and their hyper-parameters) over ``new``'s
    parameters, with the state of ``old``'s restricted to the neurons ``kept`` (per hidden layer, indices
    into ``old``; :func:`sciprune.compaction.compact_kept`). ``old`` and ``new`` are the same chain of
    Linear layers but for the hidden widths; ``optimizer`` must hold ``old``'s parameters only."""
    if isinstance(optimizer, torch.optim.LBFGS):
        raise SciPruneError("the L-BFGS optimiser keeps one flat history over all parameters, which cannot follow "
                            "a network whose layers shrink; use adam, adamw or sgd")
    old_lins, new_lins = linear_chain(old), linear_chain(new)
    if len(old_lins) != len(new_lins) or len(kept) != len(old_lins) - 1:
        raise SciPruneError(f"the compacted network has {len(new_lins)} Linear layers and {len(kept)} kept-index "
                            f"lists for {len(old_lins)} layers; expected the same chain with one list per hidden layer")
    mapping: dict[int, tuple[nn.Parameter, nn.Parameter, object, object]] = {}
    for (rows, cols), o, n in zip(_slices(len(old_lins), kept), old_lins, new_lins):
        mapping[id(o.weight)] = (o.weight, n.weight, rows, cols)
        if o.bias is not None and n.bias is not None:
            mapping[id(o.bias)] = (o.bias, n.bias, rows, None)
    groups, seen = [], set()
    for g in optimizer.param_groups:
        params = []
        for p in g["params"]:
            if id(p) not in mapping:
                raise SciPruneError("the optimiser holds a parameter that is not a Linear weight or bias of the "
                                    "network being compacted; expected an optimiser over that network's parameters")
            params.append(mapping[id(p)][1])
            seen.add(id(p))
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": params})
    # a bias compaction created (folded constants into a bias-less layer) trains with the first group
    extra = [n.bias for o, n in zip(old_lins, new_lins) if o.bias is None and n.bias is not None]
    if extra:
        groups[0]["params"].extend(extra)
    out = type(optimizer)(groups)
    for key, (p_old, p_new, rows, cols) in mapping.items():
        if key in seen and p_old in optimizer.state:
            out.state[p_new] = {k: _take(v, p_old, rows, cols) for k, v in optimizer.state[p_old].items()}
    return out


def compact_in_training(model: nn.Module, optimizer: torch.optim.Optimizer
                        ) -> tuple[nn.Module, torch.optim.Optimizer, list[torch.Tensor]]:
    """``(smaller network, its optimiser, kept)``: :func:`sciprune.compaction.compact_kept` of ``model``
    (masks carried over) and :func:`follow_optimizer`. ``model`` and ``optimizer`` are left as they were."""
    new, kept = compact_kept(model)
    return new, follow_optimizer(optimizer, model, new, kept), kept
