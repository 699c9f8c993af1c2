"""Training hooks for the ensemble engine: members as ordinary modules, masks that change while training.

Design. :func:`sciprune.ensemble.fit_ensemble` trains copies of the members' parameters stacked as
``(M, *shape)`` tensors. When hooks are given, each member's parameters are made *views* of its row
of the stacks for the length of the run (``p.data = stack[m]``; the member's own storage is saved and
gets the final values back when training ends, so parameter identity is kept). A hook therefore sees
the user's own member modules (:attr:`EnsembleFitState.members`), always in sync with the stacked
weights, and anything it does to a member in place (``sciprune.prune``, ``set_masks``,
``apply_plan``, ``load_state_dict`` for a rewind) acts on the stacked tensors at once: no copies per
step, and a hook holding the member modules directly sees the same weights. In ``after_backward``
each member's ``.grad`` is likewise a view of its row of the stacked gradient (reset to None after).

After each hook returns, :class:`StackedMasks` compares :func:`sciprune.masks.mask_version` (one int
compare) and, only when it changed, restacks the masks of every parameter whose mask buffer was
replaced in some member, multiplies the stacked optimiser state of that parameter (each state tensor
shaped like it: Adam/AdamW ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``, SGD ``momentum_buffer``)
by the new mask and enforces it on the stacked weights - entrywise the operations that
:meth:`sciprune.MaskedStep.refresh` does for one model, so a member pruned by a hook in the ensemble
follows the same trajectory as under ``sciprune.fit`` with the same hook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..hooks import EVENTS
from ..masks import enforce, mask_version
from ._stack import mask_buffers, stack_mask

__all__ = ["EnsembleFitState", "StackedMasks", "alias_members", "release_members", "lend_grads",
           "take_grads", "call_hooks", "as_member_hooks"]


@dataclass
class EnsembleFitState:
    """What an ensemble hook sees; one object per group of members trained together, updated in place.

    ``members``: the member modules (parameters are views of the stacked tensors during training);
    ``indices``: their positions in the list given to ``fit_many`` (0..M-1 for ``fit_ensemble``);
    ``optimizer``: the optimiser of the stacked tensors ``params`` (``{name: (M, *shape)}``; None when
    a member is trained alone by ``sciprune.fit``, then ``optimizer`` is that fit's); ``step``,
    ``epoch``, ``epochs``, ``stop`` as in :class:`sciprune.hooks.FitState` (``stop`` ends training
    of the whole group); ``loss``: ``(M,)`` tensor of the members' current mini-batch losses;
    ``train_loss``, ``val_loss``: lists over members, set at ``end_of_epoch`` (NaN otherwise).
    """

    members: list[nn.Module]
    indices: list[int]
    optimizer: torch.optim.Optimizer
    epochs: int
    params: dict[str, torch.Tensor] | None = None
    step: int = 0
    epoch: int = 0
    loss: torch.Tensor | None = None
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    stop: bool = False

    def start_epoch(self, epoch: int) -> None:
        M = len(self.members)
        self.epoch, self.train_loss, self.val_loss = epoch, [math.nan] * M, [math.nan] * M


@torch.no_grad()
def alias_members(models: list[nn.Module], params: dict[str, torch.Tensor],
                  saved: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Make parameter ``name`` of ``models[m]`` a view of ``params[name][m]``, appending to ``saved``
    what :func:`release_members` needs to give each parameter its own storage back (also when
    interrupted half-way)."""
    for m, model in enumerate(models):
        for name, p in model.named_parameters():
            saved.append((p, p.data))
            p.data = params[name][m]


@torch.no_grad()
def release_members(saved: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
    """Copy each aliased parameter's current value into its own storage and point it back there."""
    for p, own in saved:
        own.copy_(p.data)
        p.data = own


@torch.no_grad()
def lend_grads(models: list[nn.Module], params: dict[str, torch.Tensor]) -> None:
    """Member ``m``'s ``p.grad``: a view of row m of the stacked gradient (None where there is none)."""
    for m, model in enumerate(models):
        for name, p in model.named_parameters():
            g = params[name].grad
            p.grad = None if g is None else g[m]


def take_grads(models: list[nn.Module]) -> None:
    for model in models:
        for p in model.parameters():
            p.grad = None


class StackedMasks:
    """The stacked float masks ``pairs`` [(stacked param, (M, *shape) mask)], re-read when masks change.

    Built as :func:`sciprune.ensemble.stack_masks` (then cast to the parameters' dtype, device).
    :meth:`refresh` restacks a parameter's mask only when some member's mask buffer for it was
    replaced (``set_masks`` registers a new tensor for every mask it sets), and then zeroes the
    optimiser state and the stacked weights at that parameter's pruned entries.
    """

    def __init__(self, models: list[nn.Module], params: dict[str, torch.Tensor]) -> None:
        self.models, self.params = models, params
        self._version = mask_version()
        self._held: dict[str, tuple[tuple, torch.Tensor]] = {}
        for name, p0 in models[0].named_parameters():
            found = mask_buffers(models, name)
            if any(f is not None for f in found):
                self._held[name] = (found, self._float(stack_mask(found, p0), name))
        self.pairs = [(params[k], f) for k, (_, f) in self._held.items()]

    def _float(self, mask: torch.Tensor, name: str) -> torch.Tensor:
        p = self.params[name]
        return mask.to(device=p.device, dtype=p.dtype)

    @torch.no_grad()
    def refresh(self, optimizer: torch.optim.Optimizer) -> bool:
        """Pick up masks changed since the last look; True when any stacked mask changed."""
        if self._version == mask_version():
            return False
        self._version = mask_version()
        held, changed = {}, []
        for name, p0 in self.models[0].named_parameters():
            found = mask_buffers(self.models, name)
            if all(f is None for f in found):
                continue
            prev = self._held.get(name)
            if prev is not None and all(a is b for a, b in zip(prev[0], found)):
                held[name] = prev
                continue
            f = self._float(stack_mask(found, p0), name)
            held[name] = (found, f)
            changed.append((self.params[name], f))
        gone = len(held) != len(self._held)
        self._held = held
        self.pairs = [(self.params[k], f) for k, (_, f) in held.items()]
        for p, f in changed:
            for key, v in optimizer.state.get(p, {}).items():
                if key != "step" and isinstance(v, torch.Tensor) and v.shape == p.shape:
                    v.mul_(f.to(v.dtype))
        enforce(changed)
        return bool(changed) or gone


def call_hooks(fns, state: EnsembleFitState, masks: StackedMasks) -> None:
    """Run one event's hooks in order; after each, pick up any mask it changed."""
    for fn in fns:
        fn(state)
        masks.refresh(state.optimizer)


class _AsMember:
    """A hook for ``sciprune.fit`` that shows ``hook`` an :class:`EnsembleFitState` of one member.

    ``fit_many`` trains members the ensemble cannot (L-BFGS, early stopping, plateau) with
    ``sciprune.fit``; this lets one hook serve both paths.
    """

    def __init__(self, hook, index: int) -> None:
        self.hook, self.index, self.view = hook, index, None
        for e in EVENTS:
            if getattr(hook, e, None) is not None:
                setattr(self, e, self._caller(e))

    def _caller(self, event: str):
        def call(fstate) -> None:
            if self.view is None:
                self.view = EnsembleFitState(members=[fstate.model], indices=[self.index],
                                             optimizer=fstate.optimizer, epochs=fstate.epochs)
            v = self.view
            v.step, v.epoch, v.stop = fstate.step, fstate.epoch, fstate.stop
            v.loss = None if fstate.loss is None else fstate.loss.reshape(1)
            v.train_loss, v.val_loss = [fstate.train_loss], [fstate.val_loss]
            getattr(self.hook, event)(v)
            fstate.stop = v.stop

        return call


def as_member_hooks(hooks, index: int):
    """``hooks`` wrapped for ``sciprune.fit`` of member ``index`` (None stays None)."""
    if not hooks or not isinstance(hooks, (list, tuple)):
        return hooks
    return [_AsMember(h, index) for h in hooks]
