"""Post-synaptic potentials (PSP): their mean square and the PSP-entropy of ReLU neurons.

For a hidden neuron i of a Linear layer the PSP is its pre-activation z_i = (W a + b)_i
(Tartaglione, Bragagnolo & Grangetto, ICANN 2020, "Pruning artificial neural networks: a way to find
well-generalizing, high-entropy sharp minima", eq. 2). Behind a ReLU the neuron's state is
phi'(z_i) = [z_i > 0] (eq. 3), and the PSP-entropy of the paper is, in bits,

    H(z_i | c) = -sum_{t in {0,1}} p[phi'(z_i) = t | c] log2 p[phi'(z_i) = t | c]      (eq. 4)
    H(z_i)     = sum_c H(z_i | c)                                                        (eq. 5)

summed over classes, not averaged (so 0 <= H(z_i) <= number of classes). The second order is the
paper's "entropy of sets of neurons" for pairs: the entropy of the joint state (phi'(z_i), phi'(z_j))
(four states) within each class, summed over classes (0 <= H(z_i, z_j) <= 2 x classes).

Everything is counted, never looped over samples or pairs (:mod:`sciprune.diagnostics._psp_counts`);
counts are accumulated over batches, so memory is bounded by one batch plus classes x width^2 counters.
"""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from torch import nn

from ..batches import Batches, as_batches
from ..chain import Walker
from ..errors import SciPruneError
from ..models import device_and_dtype
from ._psp_counts import Counts, HiddenLayer, hidden_layers, pair_mean, record_psps, resolve_classes

__all__ = ["psp_norms", "psp_entropy"]

_PAPER = "Tartaglione, Bragagnolo & Grangetto, ICANN 2020 (arXiv:2004.14765), eqs. 2-5"


def _relu_layers(model: nn.Module) -> list[HiddenLayer]:
    layers = hidden_layers(model)
    relu = [lay for lay in layers if lay.relu]
    if not relu:
        acts = sorted({lay.activation for lay in layers}) or ["none (no hidden layer)"]
        raise SciPruneError(
            f"PSP-entropy needs ReLU hidden layers; model has activations {', '.join(acts)}. "
            "Use psp_norms for the PSP norms of any activation."
        )
    return relu


def _check_order(order) -> tuple[int, ...]:
    try:
        o = tuple(sorted({int(k) for k in order}))
    except TypeError:
        o = ()
    if not o or not set(o) <= {1, 2}:
        raise SciPruneError(f"order must be a non-empty subset of (1, 2), got {order!r}")
    return o


def _check_data(model: nn.Module, data, batch_size: int | None) -> Batches:
    device, dtype = device_and_dtype(model)
    return as_batches(data, device=device, dtype=dtype, batch_size=batch_size)


# ---------------------------------------------------------------------------------------- public
@torch.no_grad()
def psp_norms(model: nn.Module, data, *, batch_size: int | None = None) -> xr.Dataset:
    """Mean squared PSP E_x[z_i^2] of every neuron of every hidden layer (any activation).

    This is the quantity the PSP-entropy paper plots as the "L2 norm of PSP values (z^2)" (Fig. 3):
    per neuron the mean over the data set of the squared pre-activation, and per layer its mean over
    neurons (``mean_psp_sq``). Masked weights are zero in the weights themselves, so the forward pass
    is the pruned one.

    Args:
        model: an ``nn.Sequential`` chain of ``nn.Linear`` and elementwise activations (e.g. :class:`MLP`).
        data: ``(X, Y)`` tensors/arrays (Y unused), a TaskData (training split) or an iterable of batches.
        batch_size: rows per forward pass for tensor data (None: all at once).

    Returns:
        Dataset with ``psp_sq_<layer>`` (dim ``neuron_<layer>``) for each hidden Linear child
        ``<layer>`` and ``mean_psp_sq``, ``width`` and the coordinate ``activation`` on dim ``layer``.
    """
    layers = hidden_layers(model)
    if not layers:
        raise SciPruneError("psp_norms needs a hidden layer (a Linear followed by an activation and another Linear)")
    batches = _check_data(model, data, batch_size)
    chain = Walker(model)
    counts = Counts([lay.width for lay in layers], [False] * len(layers), 1, order2=False,
                     device=device_and_dtype(model)[0])
    for X, _ in batches:
        zs = record_psps(chain, X, layers)
        counts.add(zs, torch.zeros(X.shape[0], dtype=torch.long, device=X.device))
    res = counts.finish()
    ds = _layer_frame(layers)
    for lay, r in zip(layers, res):
        ds[f"psp_sq_{lay.name}"] = (f"neuron_{lay.name}", r["psp_sq"].cpu().numpy())
    ds["mean_psp_sq"] = ("layer", np.array([float(r["psp_sq"].mean()) for r in res]))
    ds.attrs.update({"quantity": "E_x[z_i^2], z = pre-activation (PSP) of a hidden neuron", "source": _PAPER,
                     "n_samples": counts.n_samples})
    return ds


@torch.no_grad()
def psp_entropy(
    model: nn.Module,
    data,
    *,
    classes: int | str | None = None,
    n_bins: int = 10,
    order: tuple[int, ...] = (1, 2),
    batch_size: int | None = None,
) -> xr.Dataset:
    """First- and second-order PSP-entropy (bits) of every ReLU hidden neuron, per class summed.

    H(z_i) = sum_c H2(p_ic), p_ic = P[z_i > 0 | class c], H2 the binary entropy in bits (paper eqs.
    4-5, classes summed, not normalised); H(z_i, z_j) = sum_c of the entropy of the four joint states
    of (z_i > 0, z_j > 0) in class c. 0 log 0 = 0 exactly (the authors' code clips p to
    [1e-4, 0.9999] instead, which gives an always-off neuron ~0.0015 bits per class rather than 0).
    A class with no sample contributes 0. Cost: one forward pass (up to the last ReLU layer) plus,
    for order 2, the products S_c^T S_c (about 2 N w^2 flops per layer of width w).

    Classes: integer targets are labels (``classes=None``: 0..max label; ``classes=K``: labels in
    [0, K)). Floating (regression) targets, or ``classes="bins"``, are split into ``n_bins``
    equal-count bins of the first output, edges from the whole data set (see ``attrs``).

    Args:
        model: ``nn.Sequential`` chain of Linear and activations with at least one ReLU hidden layer
            (only the ReLU hidden layers are measured).
        data: ``(X, Y)``, a TaskData (training split) or an iterable of ``(X, Y)`` batches; X (N, F_in),
            Y (N,) int labels or (N, F_out) float targets.
        classes: ``None``, a number of label classes, or ``"bins"``.
        n_bins: number of quantile classes for regression targets.
        order: which orders to compute, a subset of (1, 2).
        batch_size: rows per forward pass for tensor data (None: all at once).

    Returns:
        Dataset with dims ``layer`` (names of the ReLU hidden Linear children), ``class`` and, per
        layer ``<l>``, ``neuron_<l>`` (and ``partner_<l>`` for pairs); variables ``psp_sq_<l>``,
        ``entropy_<l>``, ``class_entropy_<l>`` and ``on_fraction_<l>`` (order 1),
        ``pair_entropy_<l>`` (order 2; its diagonal is the first-order entropy), ``class_count``,
        and per layer ``mean_psp_sq``, ``mean_entropy`` (over neurons), ``mean_pair_entropy``
        (over pairs i < j; NaN for a one-neuron layer), ``width``.
    """
    orders = _check_order(order)
    layers = _relu_layers(model)
    batches = _check_data(model, data, batch_size)
    spec = resolve_classes(batches, classes, n_bins)
    chain = Walker(model)
    counts = Counts([lay.width for lay in layers], [True] * len(layers), spec.n, order2=2 in orders,
                     device=device_and_dtype(model)[0])
    for X, Y in batches:
        counts.add(record_psps(chain, X, layers), spec.of(Y))
    res = counts.finish()
    ds = _layer_frame(layers).assign_coords({"class": np.arange(spec.n)})
    if spec.kind == "quantile_bins":
        e = spec.edges.cpu().numpy()
        ds = ds.assign_coords(class_lower=("class", np.concatenate([[-np.inf], e])),
                              class_upper=("class", np.concatenate([e, [np.inf]])))
    ds["class_count"] = ("class", counts.n.cpu().numpy().astype(np.int64))
    for lay, r in zip(layers, res):
        nd, pd = f"neuron_{lay.name}", f"partner_{lay.name}"
        ds[f"psp_sq_{lay.name}"] = (nd, r["psp_sq"].cpu().numpy())
        if 1 in orders:
            ds[f"entropy_{lay.name}"] = (nd, r["entropy"].cpu().numpy())
            ds[f"class_entropy_{lay.name}"] = ((nd, "class"), r["class_entropy"].mT.cpu().numpy())
            ds[f"on_fraction_{lay.name}"] = ((nd, "class"), r["on_fraction"].mT.cpu().numpy())
        if 2 in orders:
            ds = ds.assign_coords({pd: np.arange(lay.width)})
            ds[f"pair_entropy_{lay.name}"] = ((nd, pd), r["pair_entropy"].cpu().numpy())
    ds["mean_psp_sq"] = ("layer", np.array([float(r["psp_sq"].mean()) for r in res]))
    if 1 in orders:
        ds["mean_entropy"] = ("layer", np.array([float(r["entropy"].mean()) for r in res]))
    if 2 in orders:
        ds["mean_pair_entropy"] = ("layer", np.array([float(pair_mean(r["pair_entropy"])) for r in res]))
    ds.attrs.update({**spec.attrs(), "order": list(orders), "n_samples": counts.n_samples, "entropy_unit": "bits",
                     "entropy_definition": "H(z_i) = sum_c H(phi'(z_i) | c), phi'(z) = [z > 0]; classes summed",
                     "source": _PAPER})
    return ds


def _layer_frame(layers: list[HiddenLayer]) -> xr.Dataset:
    coords = {"layer": [lay.name for lay in layers], "activation": ("layer", [lay.activation for lay in layers])}
    for lay in layers:
        coords[f"neuron_{lay.name}"] = np.arange(lay.width)
    ds = xr.Dataset(coords=coords)
    ds["width"] = ("layer", np.array([lay.width for lay in layers], dtype=np.int64))
    return ds
