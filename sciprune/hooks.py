"""Training hooks: objects with optional methods called by :func:`sciprune.fit` at fixed points.

A hook is any object with one or more of these methods, each taking the live :class:`FitState`::

    after_backward(state)  # gradients computed, before the (masked) optimiser step
    after_step(state)      # after the optimiser step; masked weights are already zero
    end_of_epoch(state)    # after the epoch's evaluation; state.val_loss set on evaluation epochs

Hooks run in list order. A hook may set or shrink masks (``sciprune.set_masks``,
``sciprune.apply_plan``, ``sciprune.prune``): they are held from the next optimiser step on and the
optimiser state of newly pruned weights is zeroed as soon as the hook returns
(:class:`sciprune.MaskedStep`). Setting ``state.stop = True`` ends training after the current
optimiser step (the epoch is then evaluated, recorded and ``end_of_epoch`` called), or at the end
of the epoch when set there. With no hooks (``None`` or ``[]``)
the loop does nothing extra per step.

Example (a mask update every 100 steps)::

    class Prune:
        def after_step(self, state):
            if state.step % 100 == 0:
                sciprune.prune(state.model, "magnitude", min(0.9, state.step / 1e4))

    sciprune.fit(model, data, config, hooks=[Prune()])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .errors import SciPruneError

__all__ = ["EVENTS", "FitState", "resolve_hooks"]

#: The hook methods :func:`sciprune.fit` calls, in the order they occur within an epoch.
EVENTS = ("after_backward", "after_step", "end_of_epoch")


@dataclass
class FitState:
    """What a hook sees; one object, updated in place during a fit.

    ``step``: optimiser steps done so far (1 at the first ``after_step``; in ``after_backward`` it
    is the number of the step about to be taken); ``epoch``: current epoch (from 1); ``loss``: the
    current mini-batch loss as a 0-dim tensor (``float(state.loss)`` to read it; kept a tensor so
    that a hook that does not read it costs no device sync); ``train_loss``, ``val_loss``: the
    epoch's mean training loss and validation loss, set at ``end_of_epoch`` on evaluation epochs
    (``eval_every``), NaN otherwise or without a validation set; ``stop``: set True to end training.
    ``batch``: the mini-batch ``(X, Y)`` of the current step, set for ``after_backward`` by
    :func:`sciprune.fit` (None in the ensemble engine), for a hook that adds a term's gradient.
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer
    epochs: int
    step: int = 0
    epoch: int = 0
    loss: torch.Tensor | None = None
    train_loss: float = math.nan
    val_loss: float = math.nan
    stop: bool = False
    batch: tuple | None = None

    @property
    def members(self) -> list[nn.Module]:
        """``[model]``: so that one hook serves ``fit`` and the ensemble engine (whose state lists its
        members)."""
        return [self.model]


def resolve_hooks(hooks) -> dict[str, list[Callable[[FitState], None]]]:
    """``hooks`` (None or a list of hook objects) as event -> bound methods, checked.

    Every hook must define at least one of :data:`EVENTS` (a typo such as ``after_stepp`` would
    otherwise be silently never called), and each of those must be callable.
    """
    out: dict[str, list] = {e: [] for e in EVENTS}
    if hooks is None:
        return out
    if isinstance(hooks, (str, bytes)) or not isinstance(hooks, (list, tuple)):
        raise SciPruneError(f"hooks must be None or a list of objects with methods {', '.join(EVENTS)}, "
                            f"got {type(hooks).__name__}")
    for i, h in enumerate(hooks):
        found = [e for e in EVENTS if getattr(h, e, None) is not None]
        if not found:
            raise SciPruneError(f"hooks[{i}] ({type(h).__name__}) has none of the methods {', '.join(EVENTS)}")
        for e in found:
            fn = getattr(h, e)
            if not callable(fn):
                raise SciPruneError(f"hooks[{i}].{e} must be a method taking the fit state, got {type(fn).__name__}")
            out[e].append(fn)
    return out
