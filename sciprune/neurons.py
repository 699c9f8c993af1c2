"""Neuron granularity: the hidden neurons of a Linear chain, their selection, and the masks removing them.

Hidden neuron i of layer l is output i of a Linear layer ``W_l`` that is not the last one (the output
layer's rows and the inputs are never neurons here). Removing it masks, with the one mask mechanism of
:mod:`sciprune.masks`, three things: row i of ``W_l`` (its incoming weights), entry i of ``b_l`` (its
bias) and column i of ``W_{l+1}`` (its outgoing weights). It then contributes ``W_{l+1}[:, i] act(0) =
0`` to the next layer, so :func:`sciprune.compact` drops it physically with the same outputs.

The bias entry has its own mask (a ``bias_mask`` buffer, set by :func:`sciprune.set_masks` like any
other): :class:`sciprune.MaskedStep` and the ensemble engine hold every masked parameter, biases
included, so the bias of a removed neuron stays exactly zero through Adam, AdamW (weight decay) and
SGD with momentum, and its optimiser state is zeroed when the mask is set.

Selection (:func:`select_neurons`) is :func:`sciprune.selection.select` on the neuron scores: with n
neurons in the pool (one layer, or all hidden layers for ``scope="global"``), exactly
``floor(ratio * n + 0.5)`` are removed, lowest scores first, ties by position, neurons already removed
first (masks only shrink). A neuron counts as removed when every entry of its row mask is False.
A ratio that would leave a hidden layer without any neuron is refused with one :class:`SciPruneError`
line before anything changes; with ``scope="global"`` whether a layer empties depends on the ranking,
so the check runs on the scores. Refusing (rather than silently keeping one neuron per layer) keeps
the count exact, which schedules rely on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import SciPruneError
from .masks import get_masks
from .models import is_elementwise_activation, linear_chain
from .selection import check_ratio, n_to_prune, select

__all__ = ["HiddenLayer", "hidden_layers", "check_hidden_names", "alive_neurons", "select_neurons",
           "neuron_param_masks", "check_neuron_ratio", "check_neuron_target", "neuron_sparsity"]


@dataclass(frozen=True)
class HiddenLayer:
    """One hidden layer: ``weight`` (name of W_l, whose rows are the neurons), ``bias`` (name of b_l
    or None), ``next_weight`` (name of W_{l+1}, whose columns are their outgoing weights), ``size``."""

    weight: str
    bias: str | None
    next_weight: str
    size: int


def hidden_layers(model: nn.Module) -> list[HiddenLayer]:
    """The hidden layers of a plain ``nn.Sequential`` of Linear layers and elementwise activations.

    Anything else (another container, a module with parameters other than Linear, Softmax or Flatten,
    sizes that do not chain, a single Linear layer) is refused with one line: neuron granularity needs
    to know which column of which layer each neuron feeds.
    """
    what = "neuron granularity needs a plain nn.Sequential chain of nn.Linear layers and elementwise activations"
    try:
        linear_chain(model)
    except SciPruneError as err:
        raise SciPruneError(f"{what}: {err}") from None
    lins: list[tuple[str, nn.Linear]] = []
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            lins.append((name, m))
        elif not is_elementwise_activation(m):
            raise SciPruneError(f"{what}; module {name!r} ({type(m).__name__}) is neither")
    if len(lins) < 2:
        raise SciPruneError(f"{what}, with at least one hidden layer; this model has a single Linear layer")
    out = []
    for (name, lin), (next_name, nxt) in zip(lins[:-1], lins[1:]):
        if lin.out_features != nxt.in_features:
            raise SciPruneError(f"{what}; layer {name!r} has {lin.out_features} outputs but {next_name!r} "
                                f"takes {nxt.in_features} inputs")
        out.append(HiddenLayer(f"{name}.weight", f"{name}.bias" if lin.bias is not None else None,
                               f"{next_name}.weight", lin.out_features))
    return out


def check_hidden_names(model: nn.Module, names) -> list[str]:
    """The hidden layers' weight names to score: all of them (None) or a list of some."""
    hidden = [h.weight for h in hidden_layers(model)]
    if names is None:
        return hidden
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise SciPruneError(f"names must be a list of hidden-layer weight names such as {hidden[:2]}, got {names!r}")
    bad = [n for n in names if n not in hidden]
    if bad or not names:
        raise SciPruneError(f"names {bad or names!r} are not hidden layers' weights (the neurons of a neuron "
                            f"criterion are the rows of a hidden layer, never the output layer); expected some of {hidden}")
    return list(names)


def alive_neurons(model: nn.Module, names: list[str]) -> dict[str, torch.Tensor]:
    """``{weight name: (out_features,) bool}``, True where the neuron's row mask keeps some entry."""
    return {n: m.any(dim=1) for n, m in get_masks(model, names=names).items()}


def check_neuron_ratio(ratio: float, sizes: dict[str, int], *, scope: str) -> None:
    """Refuse, from the layer sizes alone, a neuron ratio that surely empties a hidden layer.

    ``scope="layer"``: floor(r n_l + 0.5) = n_l for some layer (exact). ``"global"``: more neurons
    removed than the pool has beyond one per layer (necessary; :func:`select_neurons` checks the rest).
    """
    r = check_ratio(ratio, unit="neurons")
    if scope == "layer":
        for name, n in sizes.items():
            if n_to_prune(r, n) >= n:
                raise SciPruneError(f"neuron ratio {ratio!r} (scope 'layer') would remove all {n} neurons of hidden "
                                    f"layer {name!r}; expected a ratio below {(n - 0.5) / n:.6g} for it")
        return
    total = sum(sizes.values())
    if n_to_prune(r, total) > total - len(sizes):
        raise SciPruneError(f"neuron ratio {ratio!r} (scope 'global') removes {n_to_prune(r, total)} of {total} "
                            f"hidden neurons, leaving fewer than one in each of the {len(sizes)} hidden layers; "
                            "expected a lower ratio")


def check_neuron_target(model: nn.Module, ratio: float, *, scope: str, names=None) -> None:
    """:func:`check_neuron_ratio` for the hidden layers ``names`` (None: all) of ``model``: what can be
    refused before any scoring or training."""
    names = check_hidden_names(model, names)
    sizes = {h.weight: h.size for h in hidden_layers(model)}
    check_neuron_ratio(ratio, {n: sizes[n] for n in names}, scope=scope)


def select_neurons(scores: dict[str, torch.Tensor], ratio: float, *, scope: str,
                   alive: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Neuron keep-masks ``{weight name: (n,) bool}`` removing ``ratio`` of the scored neurons.

    The rounding rule, ties and nesting are those of :func:`sciprune.selection.select`; a result that
    leaves a hidden layer without a neuron is refused (nothing is changed: this only computes masks).
    """
    check_neuron_ratio(ratio, {n: s.numel() for n, s in scores.items()}, scope=scope)
    keep = select(scores, ratio, scope=scope, masks=alive)
    for name, k in keep.items():
        if not bool(k.any()):
            raise SciPruneError(f"neuron ratio {ratio!r} (scope {scope!r}) would remove all {k.numel()} neurons of "
                                f"hidden layer {name!r}; expected a ratio that leaves at least one neuron in every "
                                "hidden layer (lower it, or use scope='layer')")
    return keep


def neuron_param_masks(layers: list[HiddenLayer], keep: dict[str, torch.Tensor],
                       params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Parameter masks removing the neurons that ``keep`` drops: rows of W_l, entries of b_l, columns
    of W_{l+1} (a weight that is both a hidden layer and the next of another gets both)."""
    out: dict[str, torch.Tensor] = {}

    def base(name: str) -> torch.Tensor:
        if name not in out:
            out[name] = torch.ones_like(params[name], dtype=torch.bool)
        return out[name]

    for h in layers:
        k = keep.get(h.weight)
        if k is None:
            continue
        k = k.to(device=params[h.weight].device, dtype=torch.bool)
        base(h.weight).mul_(k[:, None])
        if h.bias is not None:
            base(h.bias).mul_(k)
        base(h.next_weight).mul_(k[None, :])
    return out


def neuron_sparsity(model: nn.Module) -> dict:
    """Removed hidden neurons (row mask all False), per layer and over all hidden layers:
    ``{"layers": {weight name: {"removed", "total", "sparsity"}}, "neurons": {...}}``."""
    layers = hidden_layers(model)
    alive = alive_neurons(model, [h.weight for h in layers])
    per, removed, total = {}, 0, 0
    for h in layers:
        r = int((~alive[h.weight]).sum())
        per[h.weight] = {"removed": r, "total": h.size, "sparsity": r / h.size}
        removed, total = removed + r, total + h.size
    return {"layers": per, "neurons": {"removed": removed, "total": total, "sparsity": removed / total}}
