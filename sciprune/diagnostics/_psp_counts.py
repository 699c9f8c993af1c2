"""What PSP-entropy counts, shared by :mod:`sciprune.diagnostics.psp` and the loss landscapes:
the hidden layers of a chain and their recorded PSPs (pre-activations), the class definition, and
the per-class state counts with the entropies formed from them.

Definitions (Tartaglione, Bragagnolo & Grangetto, ICANN 2020, eqs. 2-5) in :mod:`sciprune.diagnostics.psp`.
Everything is counted, never looped over samples or pairs: with S_c the (n_c, width) 0/1 state matrix
of the samples of class c, the per-class "on" counts are 1^T S_c, the both-on counts of every pair
are S_c^T S_c (one batched product over equal-size chunks of each class's rows), and the other three
joint states follow from these and n_c.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..batches import Batches
from ..chain import Walker
from ..errors import SciPruneError

__all__ = ["Classes", "Counts", "HiddenLayer", "hidden_layers", "pair_mean", "record_psps", "resolve_classes"]

_EXACT_ROWS = 1 << 24  # float32 sums of 0/1 values stay exact below this many rows


@dataclass(frozen=True)
class HiddenLayer:
    """A hidden Linear layer of a Sequential chain: the child ``name`` at position ``index``, its
    activation's name, and ``relu``: whether PSP-entropy counts its on/off states."""

    name: str
    index: int
    width: int
    activation: str
    relu: bool


def hidden_layers(model: nn.Module) -> list[HiddenLayer]:
    """Linear children followed by an activation and, later, by another Linear (hidden layers)."""
    chain = Walker(model)  # validates: an nn.Sequential of Linear layers and elementwise activations
    last_linear = max(chain.layers.values())
    layers = []
    for name, k in chain.layers.items():
        if k < last_linear and k + 1 in chain.acts:
            act = chain.acts[k + 1]
            layers.append(HiddenLayer(name, k, chain.weight(k).shape[0], act.name, act.name == "relu"))
    return layers


def record_psps(chain: Walker, x: torch.Tensor, layers: list[HiddenLayer]) -> list[torch.Tensor]:
    """The PSPs (pre-activations) of ``layers`` for inputs ``x``; the chain is run up to the last one.

    The tensors live in the walker's buffers, valid until its next pass."""
    upto = max(lay.index for lay in layers)
    inputs, y = chain.forward(x, upto=upto)
    return [chain.output_of(lay.index, inputs, y) for lay in layers]


# ----------------------------------------------------------------------------------------- classes
@dataclass(frozen=True)
class Classes:
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


def resolve_classes(batches: Batches, classes: int | str | None, n_bins: int) -> Classes:
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
        return Classes("quantile_bins", n_bins, edges)
    if Y.is_floating_point():
        raise SciPruneError(f"classes={classes} needs integer labels, got floating targets; "
                            "use classes=None or 'bins' to bin a regression target into n_bins quantile classes")
    n = classes if classes is not None else int(Y.max()) + 1 if Y.numel() else 1
    return Classes("labels", n)


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
class Counts:
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


def pair_mean(H: torch.Tensor) -> torch.Tensor:
    """Mean over the pairs i < j of a (..., w, w) matrix; NaN when w < 2."""
    w = H.shape[-1]
    if w < 2:
        return torch.full(H.shape[:-2], torch.nan, dtype=H.dtype, device=H.device)
    iu = torch.triu_indices(w, w, 1, device=H.device)
    return H[..., iu[0], iu[1]].mean(-1)
