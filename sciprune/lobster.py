"""LOBSTER (Tartaglione, Bragagnolo, Odierna, Fiandrotti, Grangetto, Neural Networks 2022) as a training hook.

After each optimiser step, on the same mini-batch gradient g = dL/dw (authors' ``LOBSTER.step``,
``EIDOSLAB/LOBSTER`` @0b01798)::

    w <- w - lam * w * relu(1 - |g|)        (lam not multiplied by the learning rate)

on the weights and biases of every ``nn.Linear`` (the authors' layers, biases included; ``biases=False``
leaves the biases alone). At a validation plateau the best weights are restored and every entry with
``|w| < T`` is pruned, T the largest threshold whose validation loss stays within ``(1 + twt) L_base``
(:mod:`sciprune.lobster_threshold`). Pruned entries are masks of :func:`sciprune.set_masks`, so they
stay exactly zero through any optimiser, and masks only shrink.

**Exact zeros.** For ``lam < 1/2`` the update can never make a non-zero weight exactly zero in floating
point: r = relu(1 - |g|) <= 1, so ``fl(lam fl(w r)) <= |w|/2`` and ``w - that`` keeps at least half of
``|w|``; the authors' code, whose mask is ``w != 0``, therefore prunes only by thresholding. For
``lam >= 1/2`` (e.g. lam = 1 and g = 0 exactly, a dead input) an entry can reach 0: it is then masked at
once (one device sync per step, only for such lam). Weights that were zero before the update (a zero
initialisation) are not masked; the authors mask every zero at each epoch start.

``max_sparsity`` (sciprune's, not the authors'; None by default, the authors' numbers unchanged) caps the
thresholdings at floor(s n + 1/2) pruned Linear weights and stops them once reached: a study's LOBSTER
variant compares at its ratio this way (:mod:`sciprune.study_lobster`).

:class:`ScaledLobster` (name ``"lobster-scaled"``) is sciprune's scale-free variant, not LOBSTER.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch import nn

from . import losses
from .batches import as_tensor, check_pair, model_shapes
from .checks import check_int
from .errors import SciPruneError
from .lobster_threshold import (Plateau, apply_threshold, linear_names, pruned_weights, threshold_bisect,
                                weights_below)
from .masks import set_masks
from .checks import check_number as _number
from .training import evaluate_loss

__all__ = ["Lobster", "ScaledLobster", "ThresholdEvent"]


@dataclass(frozen=True)
class ThresholdEvent:
    """One thresholding of one member: at ``epoch`` (optimiser ``step``) the best weights (validation loss
    ``base_loss``) were pruned at ``threshold`` (loss then ``loss`` <= ``bound``); ``pruned`` entries,
    ``evaluations`` validation passes of the bisection; ``capped``: ``max_sparsity`` stopped it short of
    ``threshold`` (then ``loss`` is the bisection's at ``threshold``, not at what was pruned)."""

    member: int
    epoch: int
    step: int
    threshold: float
    base_loss: float
    bound: float
    loss: float
    pruned: int
    evaluations: int
    capped: bool = False


def _check_val(val):
    """None, one (X, Y) shared by every member, or a list with one (X, Y) per member index."""
    if val is None:
        return None
    if isinstance(val, tuple) and len(val) == 2:
        return check_pair(as_tensor(val[0], name="val X"), as_tensor(val[1], name="val Y"), None,
                          names=("val X", "val Y"))
    if isinstance(val, list) and val and all(isinstance(v, tuple) and len(v) == 2 for v in val):
        return [_check_val(v) for v in val]
    raise SciPruneError(f"val must be None, a tuple (X_val, Y_val) or a list of one such tuple per member, "
                        f"got {type(val).__name__}")


def _check_cap(cap):
    """None, one sparsity in [0, 1) shared by every member, or a list with one per member index."""
    if isinstance(cap, list) and cap:
        return [_check_cap(c) for c in cap]
    if cap is None:
        return None
    value = _number(cap, "max_sparsity")
    if value >= 1:
        raise SciPruneError(f"max_sparsity must be a fraction of the weights in [0, 1), got {cap!r}")
    return value


class Lobster:
    """The LOBSTER training hook for :func:`sciprune.fit` and :func:`sciprune.ensemble.fit_many` (each
    member independently). Defaults are the authors' (``args.py``): ``lam`` 1e-4, ``twt`` 0, ``pwe`` 0
    (a thresholding at every evaluation); their README's LeNet-5 run uses twt 0.05, pwe 20.

    Args:
        lam: regularisation strength, in (0, 1] (the update shrinks each weight by the factor
            1 - lam relu(1 - |g|) in [0, 1]).
        val: the validation set ``(X, Y)`` of the bisection (one shared, or a list indexed by member
            index); pass the one given to ``fit``, whose ``state.val_loss`` drives the plateau test.
            None: the regulariser only, no thresholding.
        loss: ``"mse"`` or ``"cross_entropy"``; default from the dtype of the validation targets.
        twt: threshold worsening tolerance, >= 0: bound = (1 + twt) L_base.
        pwe: plateau waiting epochs (evaluations), >= 0.
        biases: regularise and threshold the biases too (the authors do).
        delta: the bisection stops when |L_a - L_b| < delta * bound (authors: 0.05).
        max_sparsity: None (the authors' LOBSTER), or a cap s (one shared, or a list indexed by member
            index): a thresholding never prunes more than K = floor(s n + 1/2) of the n Linear weights
            (biases are not counted) - the bisection's T is capped at the magnitude that reaches exactly K
            (:func:`~sciprune.lobster_threshold.apply_threshold` with ``limit``) - and once K are pruned
            the member's plateau test and thresholding stop (masks held, the regulariser goes on). For a
            study that compares at sparsity s; not in the authors' method.

    ``events``: one :class:`ThresholdEvent` per thresholding; ``zeroed``: entries the update itself made
    exactly zero (only possible for lam >= 1/2).
    """

    name = "lobster"

    def __init__(self, lam: float = 1e-4, *, val=None, loss: str | None = None, twt: float = 0.0, pwe: int = 0,
                 biases: bool = True, delta: float = 0.05, max_sparsity=None) -> None:
        self.lam = _number(lam, "lam", positive=True)
        if self.lam > 1:
            raise SciPruneError(f"lam must be in (0, 1] (the update multiplies a weight by 1 - lam relu(1 - |g|)), "
                                f"got {lam!r}")
        self.twt = _number(twt, "twt")
        self.pwe = check_int(pwe, "pwe", lo=0)
        self.delta = _number(delta, "delta", positive=True)
        if not isinstance(biases, bool):
            raise SciPruneError(f"biases must be True or False, got {biases!r}")
        self.biases = biases
        self.loss = None if loss is None else losses.check_loss(loss)
        self.val = _check_val(val)
        self.max_sparsity = _check_cap(max_sparsity)
        self.events: list[ThresholdEvent] = []
        self.zeroed = 0
        self._plateaus: dict[int, Plateau] = {}
        self._vals: dict[int, tuple] = {}
        self._cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    # -- the regulariser -------------------------------------------------------------------------------
    def _insensitivity(self, key: tuple, items: list, stacked: bool) -> list[torch.Tensor]:
        """relu(1 - |g|) for each (name, W, G) of ``items``: LOBSTER's sensitivity is |g| itself."""
        R = torch._foreach_abs([G for _, _, G in items])
        torch._foreach_mul_(R, -1.0)
        torch._foreach_add_(R, 1.0)
        torch._foreach_clamp_min_(R, 0.0)
        return R

    def _params(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) regularised in ``model``, cached per module (the parameters never change)."""
        got = self._cache.get(model)
        if got is None:
            ps = dict(model.named_parameters())
            got = self._cache[model] = [(n, ps[n]) for n in linear_names(model, biases=self.biases)]
        return got

    def _groups(self, state) -> list[tuple[tuple, list[nn.Module], list, bool]]:
        """(member indices, member modules, [(name, W, G)], stacked): W, G of shape (members, *shape) when
        stacked (the ensemble engine's rows), else one member's own parameter and gradient."""
        members = list(state.members)
        indices = list(getattr(state, "indices", None) or [0])
        stacked = getattr(state, "params", None)
        if stacked is not None:
            names = [n for n, _ in self._params(members[0])]
            return [(tuple(indices), members, [(n, stacked[n], stacked[n].grad) for n in names], True)]
        return [((i,), [m], [(n, p, p.grad) for n, p in self._params(m)], False) for i, m in zip(indices, members)]

    @torch.no_grad()
    def after_step(self, state) -> None:
        """w <- w - lam * w * relu(1 - |g|) with g the gradient of this step's mini-batch (in ``.grad``)."""
        if state.step == 1:  # a new run for these members: forget what earlier runs recorded
            self._reset(list(getattr(state, "indices", None) or [0]))
        for key, members, items, stacked in self._groups(state):
            for n, _, G in items:
                if G is None:
                    raise SciPruneError(f"Lobster needs this step's gradient in .grad at after_step; {n!r} has none "
                                        "(use it as a hook of sciprune.fit or sciprune.ensemble.fit_many)")
            W = [w for _, w, _ in items]
            U = self._insensitivity(key, items, stacked)
            torch._foreach_mul_(U, W)  # u = r * w (the authors' regu = p * insensitivity)
            torch._foreach_add_(W, U, alpha=-self.lam)
            if self.lam >= 0.5:
                self._mask_new_zeros(key, members, items, W, U, stacked)

    def _mask_new_zeros(self, key: tuple, members: list[nn.Module], items: list, W: list, U: list,
                        stacked: bool) -> None:
        """Mask the entries this update made exactly zero (w == 0 now, u = r w != 0 before); under
        ``max_sparsity`` only as many weights as its room, the first in position order."""
        Z = [(w == 0) & (u != 0) for w, u in zip(W, U)]
        if not stacked:
            Z = [z[None] for z in Z]
        flags = torch.stack([z.flatten(1).any(1) for z in Z]).any(0).tolist()
        for m, flag in enumerate(flags):
            if flag:
                zs = self._within(items, [z[m] for z in Z], self._room(key[m], members[m]))
                masks = {n: ~z for (n, _, _), z in zip(items, zs) if bool(z.any())}
                self.zeroed += sum(int((~k).sum()) for k in masks.values())
                set_masks(members[m], masks)

    @staticmethod
    def _within(items: list, zs: list[torch.Tensor], room: int | None) -> list[torch.Tensor]:
        """``zs`` (entries to prune, per item) keeping at most ``room`` weights, the first in position order."""
        if room is None:
            return zs
        out = []
        for (n, _, _), z in zip(items, zs):
            if n.endswith("weight"):
                keep = z.flatten().cumsum(0) <= room
                z = z & keep.view_as(z)
                room -= int(z.sum())
            out.append(z)
        return out

    def _cap_for(self, index: int) -> float | None:
        if isinstance(self.max_sparsity, list):
            if not 0 <= index < len(self.max_sparsity):
                raise SciPruneError(f"max_sparsity has {len(self.max_sparsity)} entries but member index {index} was "
                                    "trained; give one per member")
            return self.max_sparsity[index]
        return self.max_sparsity

    def _room(self, index: int, model: nn.Module) -> int | None:
        """Weights member ``index`` may still lose under its cap, K - pruned with K = floor(s n + 1/2)
        (n: its Linear weights; the study's count, :func:`sciprune.selection`); None without a cap."""
        cap = self._cap_for(index)
        if cap is None:
            return None
        pruned, total = pruned_weights(model, linear_names(model, biases=False))
        return max(0, math.floor(cap * total + 0.5) - pruned)

    def _reset(self, indices: list[int]) -> None:
        for i in indices:
            self._plateaus.pop(i, None)

    # -- thresholding at a plateau -----------------------------------------------------------------------
    def _val_for(self, index: int, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor, str]:
        if isinstance(self.val, list):
            if not 0 <= index < len(self.val):
                raise SciPruneError(f"val has {len(self.val)} entries but member index {index} was trained; "
                                    "give one (X_val, Y_val) per member")
            X, Y = self.val[index]
        else:
            X, Y = self.val
        p = next(model.parameters())
        cached = self._vals.get(index)
        if cached is None or cached[0].device != p.device or cached[0].dtype != p.dtype:
            Xv, Yv = check_pair(as_tensor(X, device=p.device, dtype=p.dtype, name="val X"),
                                as_tensor(Y, device=p.device, dtype=p.dtype, name="val Y"),
                                model_shapes(model), names=("val X", "val Y"))
            cached = self._vals[index] = (Xv, Yv, losses.resolve(self.loss, Yv))
        return cached

    def end_of_epoch(self, state) -> None:
        """Plateau test on ``state.val_loss`` per member; at a plateau restore the best weights and threshold."""
        if self.val is None:
            return
        vals = state.val_loss if isinstance(state.val_loss, list) else [state.val_loss]
        indices = list(getattr(state, "indices", None) or [0])
        for i, member, v in zip(indices, state.members, vals):
            if not math.isfinite(v) or self._room(i, member) == 0:
                continue  # not evaluated, or the cap reached: no plateau test, no thresholding, masks held
            if self._plateaus.setdefault(i, Plateau(self.pwe)).step(v, member):
                self._threshold(i, member, state)

    def _threshold(self, index: int, model: nn.Module, state) -> None:
        Xv, Yv, loss = self._val_for(index, model)

        def val_loss(m: nn.Module) -> float:
            return evaluate_loss(m, Xv, Yv, loss)

        names = linear_names(model, biases=self.biases)
        base = val_loss(model)
        found = threshold_bisect(model, val_loss, (1.0 + self.twt) * base, base_loss=base, names=names,
                                 delta=self.delta)
        room, T = self._room(index, model), found.threshold
        capped = room is not None and T > 0 and weights_below(model, T, names) > room
        pruned = apply_threshold(model, T, names, limit=room) if T > 0 else 0
        self.events.append(ThresholdEvent(member=index, epoch=state.epoch, step=state.step, threshold=found.threshold,
                                          base_loss=base, bound=found.bound, loss=found.loss, pruned=pruned,
                                          evaluations=len(found.trials), capped=capped))


class ScaledLobster(Lobster):
    """sciprune's scale-free variant of LOBSTER (name ``"lobster-scaled"``; NOT the authors' method).

    The sensitivity of an entry is ``|g| / s`` instead of ``|g|``, with ``s`` a running scale of its
    parameter tensor's gradients (per member, per weight or bias tensor): the bias-corrected exponential
    moving average (Kingma & Ba 2015's correction) of the mean ``|g|`` over the tensor's non-zero entries,

        m_t = beta m_{t-1} + (1 - beta) mean_{w != 0} |g_t|,   s_t = m_t / (1 - beta^t),
        w <- w - lam * w * relu(1 - |g| / s_t)

    so entries whose gradient is below their layer's typical size decay, the others not, whatever the
    scale of the loss (LOBSTER's fixed 1 makes it plain decay when every |g| << 1, e.g. on MSE near 1e-4).
    ``beta`` in [0, 1) (default 0.99); other arguments as :class:`Lobster`.
    """

    name = "lobster-scaled"

    def __init__(self, lam: float = 1e-4, *, beta: float = 0.99, **kwargs) -> None:
        super().__init__(lam, **kwargs)
        self.beta = _number(beta, "beta")
        if self.beta >= 1:
            raise SciPruneError(f"beta must be a finite number in [0, 1), got {beta!r}")
        self._scale: dict[tuple, tuple[torch.Tensor, int]] = {}

    def _insensitivity(self, key: tuple, items: list, stacked: bool) -> list[torch.Tensor]:
        out = []
        for name, W, G in items:
            a = G.abs()
            rows = (lambda t: t.flatten(1)) if stacked else (lambda t: t.reshape(1, -1))
            live = rows(W != 0).sum(1).clamp_min(1).to(a.dtype)
            mean = rows(a).sum(1) / live
            m, t = self._scale.get((key, name), (torch.zeros_like(mean), 0))
            m, t = m * self.beta + mean * (1.0 - self.beta), t + 1
            self._scale[(key, name)] = (m, t)
            s = (m / (1.0 - self.beta ** t)).clamp_min(torch.finfo(a.dtype).tiny)
            s = s.view(-1, *[1] * (a.ndim - 1)) if stacked else s  # (1,) broadcasts over one member's tensor
            out.append(a.div_(s).mul_(-1.0).add_(1.0).clamp_min_(0.0))
        return out

    def _reset(self, indices: list[int]) -> None:
        super()._reset(indices)
        gone = set(indices)
        self._scale = {k: v for k, v in self._scale.items() if not gone & set(k[0])}
