"""LOBSTER's thresholding: the plateau test and the bisection for the largest admissible magnitude threshold.

From the authors' code (``EIDOSLAB/LOBSTER`` @0b01798, ``src/utilities/pruning/thresholding/``):

* **Plateau** (``plateau_scheduler.py``): an evaluation is *bad* when the validation loss is at least
  1% above the best since the last thresholding, ``L >= (1 + 0.01) L_best``; any other evaluation resets
  the count (and a strictly lower loss becomes the best, its weights kept). After ``pwe`` consecutive
  bad evaluations (``num_bad >= pwe``, so with ``pwe = 0`` at *every* evaluation) the best weights are
  restored and the record is cleared.
* **Bisection** (``threshold_scheduler.py``, :func:`threshold_bisect`): with ``L_T`` the validation loss
  after zeroing every entry with ``|p| < T``, find the largest ``T`` with ``L_T <= bound``,
  ``bound = (1 + twt) L_base``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .errors import SciPruneError
from .masks import enforce, get_masks, prunable_names, set_masks

__all__ = ["Bisection", "threshold_bisect", "threshold_range", "apply_threshold", "weights_below", "pruned_weights", "linear_names",
           "Plateau", "PLATEAU_TOLERANCE"]

#: Relative margin of the authors' plateau test: an evaluation is bad when ``L >= (1 + 0.01) L_best``.
PLATEAU_TOLERANCE = 0.01


def linear_names(model: nn.Module, *, biases: bool) -> list[str]:
    """The weight of every ``nn.Linear`` (in module order), each followed by its bias when ``biases``."""
    out = []
    for mname, m in model.named_modules():
        if isinstance(m, nn.Linear):
            pre = f"{mname}." if mname else ""
            out.append(f"{pre}weight")
            if biases and m.bias is not None:
                out.append(f"{pre}bias")
    return out


@dataclass
class Bisection:
    """What :func:`threshold_bisect` found: ``threshold`` T (0.0: nothing may be pruned), the loss
    ``loss`` at T, ``base_loss``, ``bound``, and every ``trials`` entry (T, L_T) evaluated, in order."""

    threshold: float
    loss: float
    base_loss: float
    bound: float
    trials: list[tuple[float, float]] = field(default_factory=list)


def threshold_range(model: nn.Module, names: list[str]) -> tuple[float, float, float] | None:
    """``(min, mean, max)`` of the non-zero ``|w|`` over the parameters ``names`` whose name ends in
    ``weight``; the mean is the mean over those layers of each layer's mean (authors'
    ``_find_mean_T``), not the mean over all entries. None when every such weight is zero."""
    params = dict(model.named_parameters())
    lo, hi, means = math.inf, 0.0, []
    for n in names:
        if not n.endswith("weight"):
            continue
        a = params[n].detach().abs()
        a = a[a != 0]
        if a.numel() == 0:
            continue
        lo, hi = min(lo, float(a.min())), max(hi, float(a.max()))
        means.append(float(a.mean()))
    if not means:
        return None
    return lo, sum(means) / len(means), hi


class _Trial:
    """Evaluate ``loss_fn`` at thresholds T, restoring the parameters ``names`` after each."""

    def __init__(self, model: nn.Module, names: list[str], loss_fn: Callable[[nn.Module], float]) -> None:
        params = dict(model.named_parameters())
        self.model, self.loss_fn = model, loss_fn
        self.params = [params[n] for n in names]
        self.saved = [p.detach().clone() for p in self.params]
        self.trials: list[tuple[float, float]] = []

    @torch.no_grad()
    def __call__(self, T: float) -> float:
        for p in self.params:
            p.masked_fill_(p.abs() < T, 0.0)
        try:
            value = float(self.loss_fn(self.model))
        finally:
            for p, s in zip(self.params, self.saved):
                p.copy_(s)
        self.trials.append((T, value))
        return value


def threshold_bisect(model: nn.Module, loss_fn: Callable[[nn.Module], float], bound: float, *,
                     base_loss: float | None = None, names: list[str] | None = None,
                     delta: float = 0.05, eps: float = 1e-10) -> Bisection:
    """The largest magnitude threshold T found by LOBSTER's bisection with ``loss_fn(model) <= bound``
    after zeroing every entry ``|p| < T`` of the parameters ``names``; ``model`` is left unchanged.

    Authors' ``_find_threshold_with_bisection``: T_mean, T_min, T_max from :func:`threshold_range`
    (weights only, non-zero entries). If ``L(T_mean) < bound`` search [T_mean, T_max] (``L_b = inf``),
    else [T_min, T_mean] with ``L_a = L_base``. Repeat c = (a + b)/2, ``L(c) <= bound`` ? a = c : b = c,
    until ``|L_a - L_b| < delta * bound``, or until c moves by at most ``eps`` (then a is returned).
    **Deviation:** at the first stop the authors return the untested midpoint (a + b)/2, which may break
    the bound; here it is always ``a``, a tested threshold (or T_min, which prunes no weight) within it.
    Entries below T_min of the other ``names`` (biases) are tested at T_min; if that breaks the bound
    the answer is T = 0 (prune nothing).

    ``loss_fn(model)``: the validation loss (a float); ``base_loss``: ``loss_fn`` at the current weights
    (evaluated if None); ``names``: default every Linear weight and bias (the authors' layers).
    """
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise SciPruneError(f"loss_fn must be a function model -> validation loss, got {type(loss_fn).__name__}")
    for what, v in (("bound", bound), ("delta", delta), ("eps", eps)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise SciPruneError(f"{what} must be a finite number >= 0, got {v!r}")
    names = linear_names(model, biases=True) if names is None else list(names)
    known = dict(model.named_parameters())
    bad = [n for n in names if n not in known]
    if bad:
        raise SciPruneError(f"model has no parameter {bad[0]!r}; Linear weights: {prunable_names(model)}")
    trial = _Trial(model, names, loss_fn)
    base = trial(0.0) if base_loss is None else float(base_loss)
    span = threshold_range(model, names)

    def done(T: float, L: float) -> Bisection:
        return Bisection(threshold=T, loss=L, base_loss=base, bound=float(bound), trials=trial.trials)

    if span is None:
        return done(0.0, base)
    lo, mean, hi = span
    L_mean = trial(mean)
    if L_mean < bound:
        a, La, b, Lb = mean, L_mean, hi, math.inf
    else:
        below = any(bool(((p != 0) & (p.abs() < lo)).any()) for p in trial.params)
        La = trial(lo) if below else base
        if La > bound:
            return done(0.0, base)
        a, b, Lb = lo, mean, L_mean
    previous = math.inf
    while not abs(La - Lb) < delta * bound:
        c = (a + b) / 2
        if abs(previous - c) <= eps:
            break
        previous = c
        Lc = trial(c)
        if Lc <= bound:
            a, La = c, Lc
        else:
            b, Lb = c, Lc
    return done(a, La)


@torch.no_grad()
def apply_threshold(model: nn.Module, T: float, names: list[str], *, limit: int | None = None) -> int:
    """Prune (with :func:`sciprune.set_masks`) every live entry ``|p| < T`` of ``names``; the count pruned.

    ``limit``: at most this many *weights* (names ending in ``weight``) are pruned. When more than
    ``limit`` live weights lie below T, exactly the ``limit`` smallest |w| are (ties by position: order
    of ``names``, then row-major), and the other entries (biases) are cut at the magnitude T_cap of the
    first weight kept, ``|p| < min(T, T_cap)``: the threshold capped where it reaches the limit.
    """
    params = dict(model.named_parameters())
    cuts = {n: (params[n].abs() < T) & (params[n] != 0) for n in names}
    weights = [n for n in names if n.endswith("weight")]
    if limit is not None and weights_below(model, T, names) > limit:
        live = torch.cat([(params[n] != 0).flatten() for n in weights])
        mags = torch.cat([params[n].detach().abs().flatten() for n in weights])
        mags = torch.where(live, mags, torch.full_like(mags, math.inf))
        order = torch.sort(mags, stable=True).indices
        chosen = torch.zeros_like(live)
        chosen[order[:limit]] = True
        cap = float(mags[order[limit]])
        start = 0
        for n in weights:
            k = params[n].numel()
            cuts[n] = chosen[start:start + k].view_as(params[n])
            start += k
        for n in names:
            if n not in weights:
                cuts[n] = (params[n].abs() < min(T, cap)) & (params[n] != 0)
    masks, count = {}, 0
    for n in names:
        k = int(cuts[n].sum())
        if k:
            masks[n], count = ~cuts[n], count + k
    if masks:
        set_masks(model, masks)
    return count


@torch.no_grad()
def weights_below(model: nn.Module, T: float, names: list[str]) -> int:
    """Live (non-zero) entries ``|w| < T`` of the parameters ``names`` ending in ``weight``."""
    params = dict(model.named_parameters())
    return sum(int(((params[n].abs() < T) & (params[n] != 0)).sum()) for n in names if n.endswith("weight"))


def pruned_weights(model: nn.Module, names: list[str]) -> tuple[int, int]:
    """(masked entries, entries) over the parameters ``names`` ending in ``weight``: the pool a study's
    ratio counts (:func:`sciprune.masks.prunable_names`)."""
    masks = get_masks(model, names=[n for n in names if n.endswith("weight")])
    return sum(int((~m).sum()) for m in masks.values()), sum(m.numel() for m in masks.values())


class Plateau:
    """The authors' plateau test for one model (see the module docstring); ``pwe`` bad evaluations."""

    def __init__(self, pwe: int) -> None:
        self.pwe = pwe
        self.best, self.bad, self.state = math.inf, 0, None

    @torch.no_grad()
    def step(self, loss: float, model: nn.Module) -> bool:
        """Record one validation loss; at a plateau restore the best weights (re-masked) and return True."""
        if loss < self.best * (1.0 + PLATEAU_TOLERANCE):
            self.bad = 0
            if loss < self.best:
                self.best = loss
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.bad += 1
        if self.bad < self.pwe:
            return False
        model.load_state_dict(self.state)
        enforce(model)  # masks set since the best evaluation hold on the restored weights: masks only shrink
        self.best, self.bad, self.state = math.inf, 0, None
        return True
