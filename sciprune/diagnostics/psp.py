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

Everything is counted, never looped over samples or pairs: with S_c the (n_c, width) 0/1 state matrix
of the samples of class c, the per-class "on" counts are 1^T S_c, the both-on counts of every pair
are S_c^T S_c (one batched product over equal-size chunks of each class's rows), and the other three
joint states follow from these and n_c. Counts are accumulated
over batches, so memory is bounded by one batch plus classes x width^2 counters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
import xarray as xr
from torch import nn

from ..batches import Batches, as_batches
from ..errors import SciPruneError
from ..models import Sine, device_and_dtype, linear_chain

__all__ = ["psp_norms", "psp_entropy"]

_PAPER = "Tartaglione, Bragagnolo & Grangetto, ICANN 2020 (arXiv:2004.14765), eqs. 2-5"
_ACT_NAMES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.GELU: "gelu", Sine: "sin", nn.Sigmoid: "sigmoid"}
_EXACT_ROWS = 1 << 24  # float32 sums of 0/1 values stay exact below this many rows


@dataclass(frozen=True)
class _Layer:
    """A hidden Linear layer of a Sequential chain: the child ``name`` at position ``index``."""

    name: str
    index: int
    width: int
    activation: str
    relu: bool


def _hidden_layers(model: nn.Module) -> list[_Layer]:
    """Linear children followed by an activation and, later, by another Linear (hidden layers)."""
    linear_chain(model)  # validates: an nn.Sequential with at least one Linear
    children = list(model.named_children())
    last_linear = max(k for k, (_, m) in enumerate(children) if isinstance(m, nn.Linear))
    layers = []
    for k, (name, m) in enumerate(children[:last_linear]):
        nxt = children[k + 1][1]
        if isinstance(m, nn.Linear) and not isinstance(nxt, nn.Linear):
            act = next((v for t, v in _ACT_NAMES.items() if type(nxt) is t), type(nxt).__name__.lower())
            layers.append(_Layer(name, k, m.out_features, act, isinstance(nxt, nn.ReLU)))
    return layers


def _relu_layers(model: nn.Module) -> list[_Layer]:
    layers = _hidden_layers(model)
    relu = [lay for lay in layers if lay.relu]
    if not relu:
        acts = sorted({lay.activation for lay in layers}) or ["none (no hidden layer)"]
        raise SciPruneError(
            f"PSP-entropy needs ReLU hidden layers; model has activations {', '.join(acts)}. "
            "Use psp_norms for the PSP norms of any activation."
        )
    return relu


def _forward_record(model: nn.Module, x: torch.Tensor, layers: list[_Layer]) -> list[torch.Tensor]:
    """The PSPs (pre-activations) of ``layers`` for inputs ``x``; the chain is run up to the last one."""
    children = list(model.children())
    keep = {lay.index for lay in layers}
    zs, a = [], x
    for k, m in enumerate(children[: max(keep) + 1]):
        a = m(a)
        if k in keep:
            # an in-place activation would overwrite the PSP we keep
            zs.append(a.clone() if getattr(children[k + 1], "inplace", False) else a)
    return zs


# ----------------------------------------------------------------------------------------- classes
@dataclass(frozen=True)
class _Classes:
    """How targets become classes: integer labels, or equal-count bins of the first output."""

    kind: str  # "labels" or "quantile_bins"
    n: int
    edges: torch.Tensor | None = None  # (n - 1,) float64 inner bin edges, for "quantile_bins"

    def of(self, Y: torch.Tensor) -> torch.Tensor:
        """Class index (int64, shape (B,)) of every row of ``Y``."""
        if self.kind == "labels":
            lab = Y.reshape(-1) if (Y.ndim == 1 or (Y.ndim == 2 and Y.shape[1] == 1)) else None
            if lab is None or lab.is_floating_point():
                raise SciPruneError(f"class labels must be an integer tensor of shape (N,), got {Y.dtype} {tuple(Y.shape)}")
            if lab.numel() and (int(lab.min()) < 0 or int(lab.max()) >= self.n):
                raise SciPruneError(f"labels must lie in [0, {self.n}), got values in [{int(lab.min())}, "
                                    f"{int(lab.max())}]; use classes=None to count classes from the labels")
            return lab.long()
        y = _first_output(Y).to(torch.float64).contiguous()
        return torch.searchsorted(self.edges.to(y.device), y, right=True)

    def attrs(self) -> dict:
        if self.kind == "labels":
            return {"classes": "labels", "class_definition": "class c = integer label c of the target"}
        return {"classes": "quantile_bins", "n_bins": self.n, "class_definition": (
            f"class c = c-th of {self.n} equal-count (quantile) bins of the first output of the target, edges from "
            "the whole data set: edge_k = (k*N//n_bins)-th smallest target (from 0), class = number of edges <= "
            "target (ties can make counts unequal)")}


def _first_output(Y: torch.Tensor) -> torch.Tensor:
    return Y.reshape(Y.shape[0], -1)[:, 0] if Y.ndim > 1 else Y


def _resolve_classes(batches: Batches, classes: int | str | None, n_bins: int) -> _Classes:
    """Class definition from the targets (see :func:`psp_entropy`)."""
    if not (classes is None or classes == "bins" or (isinstance(classes, int) and not isinstance(classes, bool))):
        raise SciPruneError(f"classes must be None, a number of label classes or 'bins', got {classes!r}")
    if isinstance(classes, int) and classes < 1:
        raise SciPruneError(f"classes must be a positive number of label classes, got {classes}")
    Y = batches.resident[1] if batches.resident is not None else torch.cat([Y for _, Y in batches])
    if classes == "bins" or (classes is None and Y.is_floating_point()):
        if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 1 <= n_bins <= Y.shape[0]:
            raise SciPruneError(f"n_bins must be an integer in [1, {Y.shape[0]}] (number of samples), got {n_bins!r}")
        y = torch.sort(_first_output(Y).to(torch.float64)).values
        N = y.shape[0]
        edges = y[torch.tensor([k * N // n_bins for k in range(1, n_bins)], dtype=torch.long, device=y.device)]
        return _Classes("quantile_bins", n_bins, edges)
    if Y.is_floating_point():
        raise SciPruneError(f"classes={classes} needs integer labels, got floating targets; "
                            "use classes=None or 'bins' to bin a regression target into n_bins quantile classes")
    n = classes if classes is not None else int(Y.max()) + 1 if Y.numel() else 1
    return _Classes("labels", n)


def _class_chunks(labels: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows grouped by class in chunks of m rows: ``index`` (chunks, m) into the rows, ``B`` (a zero
    row appended by the caller) where a class's last chunk is padded; ``chunk_class`` (chunks,).

    One batched product over equal-size chunks was ~3x faster on CPU than one product per class of
    ragged size (LeNet-300-100, 16384-row batches); the padding rows count nothing.
    """
    B = labels.shape[0]
    m = max(32, min(1024, B // (4 * n)) // 32 * 32)
    perm = torch.argsort(labels, stable=True)
    pieces, owner, s = [], [], 0
    for c, k in enumerate(torch.bincount(labels, minlength=n).tolist()):
        if k:
            rows = perm[s : s + k]
            pad = -k % m
            if pad:
                rows = torch.cat([rows, rows.new_full((pad,), B)])
            pieces.append(rows.view(-1, m))
            owner += [c] * ((k + pad) // m)
            s += k
    index = torch.cat(pieces) if pieces else labels.new_zeros((0, m))
    return index, torch.tensor(owner, dtype=torch.long, device=labels.device)


# ------------------------------------------------------------------------------------------ counts
class _Counts:
    """Accumulated per-class state counts and sums of z^2 for a list of layers.

    Every tensor may carry leading dimensions ``lead`` (several parameter points evaluated at once,
    as in the loss landscapes). ``relu[l]`` says whether layer l gets state counts (else only z^2).
    """

    def __init__(self, widths: list[int], relu: list[bool], n_classes: int, *, order2: bool,
                 lead: tuple[int, ...] = (), device=None) -> None:
        f64 = {"dtype": torch.float64, "device": device}
        self.K, self.n_samples = n_classes, 0
        self.n = torch.zeros(n_classes, **f64)
        self.sq = [torch.zeros(*lead, w, **f64) for w in widths]
        self.on = [torch.zeros(*lead, n_classes, w, **f64) if r else None for w, r in zip(widths, relu)]
        self.both = [torch.zeros(*lead, n_classes, w, w, **f64) if r and order2 else None for w, r in zip(widths, relu)]

    def add(self, zs: list[torch.Tensor], labels: torch.Tensor) -> None:
        """Add a batch: ``zs[l]`` (..., B, width_l) the PSPs of the rows whose classes are ``labels`` (B,)."""
        B = labels.shape[0]
        self.n_samples += B
        low = bool(zs) and zs[0].dtype in (torch.float16, torch.bfloat16, torch.float32)
        cdtype = torch.float32 if low and B < _EXACT_ROWS else torch.float64
        onehot = F.one_hot(labels, self.K).to(cdtype)
        self.n += onehot.sum(0, dtype=torch.float64)
        chunks = _class_chunks(labels, self.K) if any(b is not None for b in self.both) else None
        for l, z in enumerate(zs):
            # a float32 sum per batch, accumulated in float64, is 4x faster than summing in float64
            self.sq[l] += z.square().sum(-2).to(torch.float64)
            if self.on[l] is None:
                continue
            on = z > 0
            self.on[l] += onehot.mT @ on.to(cdtype)
            if self.both[l] is not None:
                index, owner = chunks
                on = torch.cat([on, on.new_zeros((*on.shape[:-2], 1, on.shape[-1]))], -2)  # row B: padding
                S = on[..., index.reshape(-1), :].to(cdtype).unflatten(-2, tuple(index.shape))  # (..., chunks, m, w)
                per_chunk = (S.mT @ S).flatten(-2)  # (..., chunks, w * w)
                # summing the chunks of each class is one more product: (K, chunks) @ (..., chunks, w * w)
                self.both[l] += (F.one_hot(owner, self.K).to(cdtype).mT @ per_chunk).unflatten(-1, S.shape[-1:] * 2)

    def finish(self) -> list[dict[str, torch.Tensor | None]]:
        """Per layer: ``psp_sq`` (..., w), and for ReLU layers ``on_fraction`` (..., K, w) (NaN for an
        empty class), ``class_entropy`` (..., K, w), ``entropy`` (..., w), ``pair_entropy`` (..., w, w)."""
        N = max(self.n_samples, 1)
        nc = self.n.clamp_min(1.0)
        out = []
        for l in range(len(self.sq)):
            res: dict[str, torch.Tensor | None] = {"psp_sq": self.sq[l] / N}
            on = self.on[l]
            if on is not None:
                p = on / nc[:, None]
                res["on_fraction"] = torch.where(self.n[:, None] > 0, p, torch.nan)
                res["class_entropy"] = (_xlog2x(p) + _xlog2x(1.0 - p)).neg()
                res["entropy"] = res["class_entropy"].sum(-2)
                if self.both[l] is not None:
                    res["pair_entropy"] = _pair_entropy(self.n, on, self.both[l])
            out.append(res)
        return out


def _xlog2x(p: torch.Tensor) -> torch.Tensor:
    """p log2 p with 0 log 0 = 0."""
    return torch.special.xlogy(p, p) / math.log(2.0)


def _pair_entropy(n: torch.Tensor, on: torch.Tensor, both: torch.Tensor) -> torch.Tensor:
    """sum_c -sum_states p log2 p of the joint states of every pair; (..., K, w), (..., K, w, w) -> (..., w, w).

    Per class, from the counts k_s of the four states: H_c = log2 n_c - sum_s k_s log2 k_s / n_c.
    """
    H = torch.zeros_like(both[..., 0, :, :])
    for c in range(n.shape[0]):
        nc = float(n[c])
        if nc <= 0:
            continue
        n11, oi, oj = both[..., c, :, :], on[..., c, :, None], on[..., c, None, :]
        n10, n01 = oi - n11, oj - n11
        n00 = (nc - oi) - n01
        t = torch.special.xlogy(n11, n11)
        for k in (n10, n01, n00):
            t += torch.special.xlogy(k, k)
        H += math.log2(nc) - t / (nc * math.log(2.0))
    return H.clamp_min_(0.0)


def _pair_mean(H: torch.Tensor) -> torch.Tensor:
    """Mean over the pairs i < j of a (..., w, w) matrix; NaN when w < 2."""
    w = H.shape[-1]
    if w < 2:
        return torch.full(H.shape[:-2], torch.nan, dtype=H.dtype, device=H.device)
    iu = torch.triu_indices(w, w, 1, device=H.device)
    return H[..., iu[0], iu[1]].mean(-1)


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
    layers = _hidden_layers(model)
    if not layers:
        raise SciPruneError("psp_norms needs a hidden layer (a Linear followed by an activation and another Linear)")
    batches = _check_data(model, data, batch_size)
    counts = _Counts([lay.width for lay in layers], [False] * len(layers), 1, order2=False,
                     device=device_and_dtype(model)[0])
    for X, _ in batches:
        zs = _forward_record(model, X, layers)
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
    spec = _resolve_classes(batches, classes, n_bins)
    counts = _Counts([lay.width for lay in layers], [True] * len(layers), spec.n, order2=2 in orders,
                     device=device_and_dtype(model)[0])
    for X, Y in batches:
        counts.add(_forward_record(model, X, layers), spec.of(Y))
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
        ds["mean_pair_entropy"] = ("layer", np.array([float(_pair_mean(r["pair_entropy"])) for r in res]))
    ds.attrs.update({**spec.attrs(), "order": list(orders), "n_samples": counts.n_samples, "entropy_unit": "bits",
                     "entropy_definition": "H(z_i) = sum_c H(phi'(z_i) | c), phi'(z) = [z > 0]; classes summed",
                     "source": _PAPER})
    return ds


def _layer_frame(layers: list[_Layer]) -> xr.Dataset:
    coords = {"layer": [lay.name for lay in layers], "activation": ("layer", [lay.activation for lay in layers])}
    for lay in layers:
        coords[f"neuron_{lay.name}"] = np.arange(lay.width)
    ds = xr.Dataset(coords=coords)
    ds["width"] = ("layer", np.array([lay.width for lay in layers], dtype=np.int64))
    return ds
