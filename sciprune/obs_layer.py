"""Exact layer-wise Optimal Brain Surgeon with the bias in the compensation (``obs-layer``).

Frantar & Alistarh, "Optimal Brain Compression" (NeurIPS 2022), code ``IST-DASLab/OBC``
``trueobs.py``; the OBS step of Hassibi & Stork (1993). For every Linear layer ``z = W a + b``:

1. ``x = [a, 1]``, the layer's inputs over the data (recorded by one forward pass of
   :class:`sciprune.chain.Walker`) with a column of ones when the layer has a bias, and
   ``H = 2 x^T x / n (+ damp * mean(diag H) * I)``, the Hessian of the mean square change of a row's
   output; one inverse ``P = H^-1`` per layer.
2. Every row removes its live weights greedily (:func:`sciprune.obs_rows.greedy_rows`): the smallest
   ``w_j^2 / [P]_jj`` goes, the rest of the row AND the bias move by ``-(w_j / P_jj) P[:, j]``, and ``P``
   is downdated by one Gaussian-elimination step; each removal's loss increase ``w_j^2 / (2 P_jj)``
   is recorded.
3. The removals are allocated as OBC's ``prune_blocked`` does: all rows' recorded increases (of all
   layers for ``scope="global"``, of each layer for ``"layer"``) are sorted, the ``k`` smallest taken,
   and each row removes as many (its first ones) as it has among them. ``k = floor(ratio * n + 0.5)``
   minus what is pruned already, with ``n`` the weights of the pool (:func:`sciprune.selection.n_to_prune`).

Steps 1-2 do not depend on the ratio: :func:`prepare_obs` makes them once (:class:`LayerOBS`), and
:meth:`LayerOBS.solve` allocates and replays the rows for each ratio (step 3), so that a study pruning
one network at several ratios inverts and records once (the criterion ``obs-layer``,
:mod:`sciprune.criteria.obs_layer`, through :func:`sciprune.plan` / :func:`sciprune.apply_plan`).

OBS chooses and compensates jointly, so it yields masks together with updates of the weights and
biases (:class:`OBSResult`), applied by :func:`apply_obs`. Elimination-compensation
(:mod:`sciprune.criteria.ec`) is the special case where only the bias may move (``docs/obs.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from .batches import as_batches
from .chain import Walker
from .checks import check_choice, check_number, check_positive_int
from .criteria import Solution
from .errors import SciPruneError
from .masks import get_masks, prunable_names
from .models import device_and_dtype
from .obs_rows import GreedyTrace, greedy_rows, inverse_hessian
from .pruning import PruneReport, _report
from .selection import SCOPES, check_ratio, n_to_prune
from .solutions import write_solution

__all__ = ["OBSResult", "LayerOBS", "DEFAULT_DAMP", "obs_layer_plan", "prepare_obs", "apply_obs", "layer_hessians",
           "check_damp"]

#: Rows of one layer processed together: their copies of H^-1 take at most this many float64 entries.
_CHUNK_ENTRIES = 1 << 24
#: The default relative dampening. OBC's is 0 (exact), but the hidden features of a smooth network of a
#: low-dimensional input (every coordinate network here) are nearly dependent, and H is then refused
#: as singular; 1e-6 keeps every Cholesky pivot above 1e-6 mean(diag H) (never refused below 10^6
#: inputs) and changes a well-conditioned layer's result by about 1e-6 relative.
DEFAULT_DAMP = 1e-6


@dataclass(frozen=True)
class OBSResult:
    """Masks and parameter updates of one ``obs-layer`` pruning (made by :func:`obs_layer_plan`).

    ``masks``: ``{weight name: keep-mask}`` (True = kept; already-pruned weights stay False).
    ``updates``: ``{parameter name: delta}`` (float64, CPU) for the weights and biases of the pruned
    layers: the OBS move of the kept weights and bias, and ``-w`` at the removed weights.
    ``losses``: ``{weight name: (rows,)}`` predicted increase of each row's mean square output change
    (exact for ``damp = 0``). ``ratio``, ``scope``, ``damp``: the request.
    """

    masks: dict[str, torch.Tensor] = field(repr=False)
    updates: dict[str, torch.Tensor] = field(repr=False)
    losses: dict[str, torch.Tensor] = field(repr=False)
    ratio: float
    scope: str
    damp: float
    method: str = "obs-layer"


def check_damp(damp) -> float:
    """``damp`` as a float if it is a finite real >= 0, else a one-line :class:`SciPruneError`."""
    return check_number(damp, "damp", meaning=" (added as damp * mean(diag H) to the diagonal of the input Hessian H)")


@torch.no_grad()
def layer_hessians(model: nn.Module, data, names: list[str], *, batch_size: int | None = None
                   ) -> dict[str, torch.Tensor]:
    """``{weight name: H = 2 x^T x / n}`` (float64, CPU), ``x`` the layer's inputs over ``data`` with a
    column of ones appended when the layer has a bias (its last row and column)."""
    walker = Walker(model)
    index = walker.index_of(names)
    device, dtype = device_and_dtype(model)
    batches = as_batches(data, device=device, dtype=dtype, batch_size=batch_size, model=model)
    at = {walker.linear_at[n]: n for n in names}
    biased = {n: walker.modules[walker.linear_at[n]].bias is not None for n in names}
    sums = {n: torch.zeros((walker.weight(t).shape[1] + biased[n],) * 2, dtype=torch.float64, device=device)
            for t, n in at.items()}
    count = 0
    for X, _ in batches:
        inputs, _ = walker.forward(X, upto=index[-1])
        for t, n in at.items():
            a = inputs[t].to(torch.float64)
            S, k = sums[n], a.shape[1]
            S[:k, :k].addmm_(a.T, a)
            if biased[n]:
                col = a.sum(0)
                S[:k, k] += col
                S[k, :k] += col
                S[k, k] += a.shape[0]
        count += X.shape[0]
    return {n: (2.0 / count) * S.cpu() for n, S in sums.items()}


def _check_names(model: nn.Module, names) -> list[str]:
    prunable = prunable_names(model)
    if names is None:
        return prunable
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not names \
            or any(n not in prunable for n in names):
        raise SciPruneError(f"names must be a non-empty list of weights of Linear layers, from {prunable}, got {names!r}")
    return list(dict.fromkeys(names))


def obs_layer_plan(model: nn.Module, data, ratio: float, *, scope: str = "global", damp: float = DEFAULT_DAMP,
                   names: list[str] | None = None, batch_size: int | None = None) -> OBSResult:
    """Exact layer-wise OBS of ``model`` on ``data`` to a weight ``ratio`` (see the module docstring).

    Args:
        model: an ``nn.Sequential`` of Linear layers and elementwise activations (unchanged here).
        data: ``(X, Y)``, a TaskData (its training split) or an iterable of ``(X, Y)`` batches: the
            inputs the layer-wise reconstruction is fitted on (the training data).
        ratio: fraction of the weights of ``names`` removed, in [0, 1), already-pruned ones included.
        scope: ``"global"`` (removals allocated across all layers by their loss increases) or
            ``"layer"`` (``ratio`` of each layer).
        damp: relative dampening of ``H`` (OBC's ``rel_damp``, whose default is 0; here
            :data:`DEFAULT_DAMP`): 0 is exact but refused when ``H`` is singular (dependent inputs,
            fewer samples than inputs).
        names: the weights to prune (default: every Linear weight).
        batch_size: rows per forward pass (default: all at once).

    :func:`prepare_obs` then :meth:`LayerOBS.solve`.
    """
    ratio = check_ratio(ratio)
    check_choice(scope, SCOPES, "scope")
    return prepare_obs(model, data, damp=damp, names=names, batch_size=batch_size).solve(ratio, scope)


class _Layer(NamedTuple):
    """One layer's ratio-free OBS state: rows ``W`` (r, m) with the bias as last column when ``bias``,
    ``P = H^-1``, the candidates, the inputs zero on all the data, and the recorded greedy trace."""

    W: torch.Tensor
    P: torch.Tensor
    cand: torch.Tensor
    zero_in: torch.Tensor
    bias: bool
    trace: GreedyTrace


class LayerOBS:
    """Layer-wise OBS of one model made up to the ratio (steps 1-2 of the module docstring): the layers'
    ``H^-1`` and each row's full greedy removal order with its loss increases (``losses``). Made by
    :func:`prepare_obs`; :meth:`solve` prunes to any ratio. Holds float64 CPU copies, never the model."""

    def __init__(self, layers: dict[str, _Layer], before: dict[str, torch.Tensor], damp: float) -> None:
        self._layers, self._before, self.damp = layers, before, damp

    @property
    def names(self) -> list[str]:
        """The weights pruned."""
        return list(self._layers)

    def scores(self) -> dict[str, torch.Tensor]:
        """``{weight name: (out, in)}``: the loss increase recorded at each weight's removal in its row's
        greedy order, what the allocation ranks (0 at weights pruned already). Not a ranking by itself:
        a row removes its removals in order, so a row's later removal may cost less than an earlier one."""
        out = {}
        for n, layer in self._layers.items():
            order, losses = layer.trace.order, layer.trace.losses
            s = torch.zeros(layer.W.shape, dtype=torch.float64)
            valid = order >= 0
            rows = torch.arange(order.shape[0]).unsqueeze(1).expand_as(order)
            s[rows[valid], order[valid]] = losses[valid]
            out[n] = s[:, : layer.W.shape[1] - layer.bias]
        return out

    def solve(self, ratio: float, scope: str = "global") -> OBSResult:
        """The masks, updates and row losses at ``ratio`` (step 3): allocation, then each row replayed to
        its count of removals (see :func:`obs_layer_plan`)."""
        ratio = check_ratio(ratio)
        check_choice(scope, SCOPES, "scope")
        before = self._before
        counts = _allocate({n: layer.trace.losses for n, layer in self._layers.items()}, before, ratio, scope)
        masks, updates, row_losses = {}, {}, {}
        for n, (W, P, cand, zero_in, bias, trace) in self._layers.items():
            c, k = counts[n], before[n].shape[1]
            new = _greedy(W, P, cand, zero_in, bias, c).weights
            keep = before[n].clone()
            for i, ci in enumerate(c.tolist()):
                keep[i, trace.order[i, :ci]] = False
            masks[n] = keep
            updates[n] = new[:, :k] - W[:, :k]
            if bias:
                updates[n[: -len("weight")] + "bias"] = new[:, k] - W[:, k]
            taken = torch.arange(trace.losses.shape[1]).unsqueeze(0) < c.unsqueeze(1)
            row_losses[n] = torch.where(taken, trace.losses, 0.0).sum(1)
        return OBSResult(masks, updates, row_losses, ratio, scope, self.damp)


def prepare_obs(model: nn.Module, data, *, damp: float = DEFAULT_DAMP, names: list[str] | None = None,
                batch_size: int | None = None) -> LayerOBS:
    """Steps 1-2 of layer-wise OBS on ``model`` (unchanged): the inverse Hessians of its layers and each
    row's greedy trace, for :meth:`LayerOBS.solve` at any ratio. Arguments as in :func:`obs_layer_plan`."""
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    damp = check_damp(damp)
    batch_size = check_positive_int(batch_size, "batch_size", none_ok=True)
    Walker(model)  # a chain, or a one-line error, before any work
    names = _check_names(model, names)
    if data is None:
        raise SciPruneError("obs-layer needs data: pass (X, Y) (the training set) or an iterable of batches")
    params = dict(model.named_parameters())
    before = {n: m.cpu() for n, m in get_masks(model, names=names).items()}
    hessians = layer_hessians(model, data, names, batch_size=batch_size)
    layers = {}
    for n in names:
        bias = params.get(n[: -len("weight")] + "bias")
        P, zero_in = inverse_hessian(hessians.pop(n), damp, f"layer {n!r}")
        W = params[n].detach().to(torch.float64).cpu()
        if bias is not None:
            W = torch.cat([W, bias.detach().to(torch.float64).cpu()[:, None]], 1)
            cand = torch.cat([before[n], torch.zeros(W.shape[0], 1, dtype=torch.bool)], 1)
        else:
            cand = before[n]
        layers[n] = _Layer(W, P, cand, zero_in, bias is not None, _greedy(W, P, cand, zero_in, bias is not None, None))
    return LayerOBS(layers, before, damp)


def _greedy(W, P, cand, zero_in, bias: bool, counts) -> GreedyTrace:
    """:func:`greedy_rows` over chunks of rows (each holds a copy of ``P`` per row), joined."""
    r, m = W.shape
    step = max(1, _CHUNK_ENTRIES // max(m * m, 1))
    parts = [greedy_rows(W[s:s + step], P, cand[s:s + step], zero_in, bias=bias,
                         counts=None if counts is None else counts[s:s + step]) for s in range(0, r, step)]
    width = max((t.losses.shape[1] for t in parts), default=0)

    def pad(x, value):
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    return GreedyTrace(torch.cat([pad(t.losses, float("inf")) for t in parts]),
                       torch.cat([pad(t.order, -1) for t in parts]),
                       None if counts is None else torch.cat([t.weights for t in parts]))


def _allocate(losses: dict[str, torch.Tensor], before: dict[str, torch.Tensor], ratio: float, scope: str
              ) -> dict[str, torch.Tensor]:
    """Removals per row: the smallest recorded increases of the pool (all layers, or each layer),
    ``n_to_prune(ratio, n)`` minus the pruned ones; ties by position (layer, row, step), stable."""
    pools = [list(losses)] if scope == "global" else [[n] for n in losses]
    counts = {}
    for pool in pools:
        n_all = sum(before[n].numel() for n in pool)
        dead = sum(int((~before[n]).sum()) for n in pool)
        take = max(n_to_prune(ratio, n_all) - dead, 0)
        flat = torch.cat([losses[n].flatten() for n in pool])
        chosen = torch.zeros(flat.numel(), dtype=torch.bool)
        chosen[torch.sort(flat, stable=True).indices[:take]] = True
        start = 0
        for n in pool:
            size = losses[n].numel()
            counts[n] = chosen[start:start + size].view_as(losses[n]).sum(1)
            start += size
    return counts


@torch.no_grad()
def apply_obs(model: nn.Module, result: OBSResult) -> PruneReport:
    """Write the updates of ``result`` into ``model`` and set its masks (:func:`sciprune.set_masks`).

    ``model`` is the network the result was made on or a copy of it (parameters matched by name). Each
    update (float64) is rounded once to the parameter's dtype and added, then the masks zero the removed
    weights and only shrink what is set already: the one apply step of :func:`sciprune.apply_plan`
    (:func:`sciprune.solutions.write_solution`). Everything is checked before anything changes.
    """
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(result, OBSResult):
        raise SciPruneError(f"result must be an OBSResult made by sciprune.obs_layer.obs_layer_plan, "
                            f"got {type(result).__name__}")
    params = dict(model.named_parameters())
    bad = [n for n, d in {**result.updates, **result.masks}.items() if n not in params or params[n].shape != d.shape]
    if bad:
        raise SciPruneError(f"the OBS result does not fit this model: no parameter of the planned shape for {bad}")
    write_solution(model, Solution(result.masks, result.updates))
    return _report(model, result.method, result.ratio, result.scope, get_masks(model, names=list(result.masks)),
                   compensated=True)
