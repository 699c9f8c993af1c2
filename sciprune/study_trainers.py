"""How a study trains its models: one model after another, or as one ensemble.

A *trainer* trains a list of models in place with one :class:`~sciprune.training.TrainConfig`, each
model with its own training hooks; the study procedure (:func:`sciprune.engine.prune_and_train`)
calls it for every training of a round. ``sciprune run`` uses :func:`sequential_trainer`
(:func:`sciprune.fit` model after model), ``sciprune sweep`` :func:`ensemble_trainer`
(:func:`sciprune.ensemble.fit_many`, per-member hooks through :class:`PerMember`); they give the same
numbers to float rounding.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import nn

from .training import History, TrainConfig

__all__ = ["Trainer", "sequential_trainer", "ensemble_trainer", "PerMember"]


class Trainer(Protocol):
    """Trains ``models`` in place with ``config``, each with its own hooks (None for none);
    ``final``: this is the last training of these models (their fine-tuning); ``names``: what each
    training is, for progress displays. One History each."""

    def __call__(self, models: list[nn.Module], config: TrainConfig, hooks: list[list | None], *,
                 final: bool, names: list[str]) -> list[History]: ...


def sequential_trainer(data, *, progress: Callable[[str], Callable | None] | None = None,
                       done: Callable[[], None] | None = None) -> Trainer:
    """A trainer calling :func:`sciprune.fit` model after model on ``data``. ``progress(name)`` gives
    the ``fit`` progress callback of a training; ``done()`` is called after each final training."""
    from .training import fit

    def train(models, config, hooks, *, final, names):
        out = []
        for model, h, name in zip(models, hooks, names):
            out.append(fit(model, data, config, hooks=h, progress=progress(name) if progress else None))
            if final and done is not None:
                done()
        return out

    return train


def ensemble_trainer(data, *, max_members: int | None = None) -> Trainer:
    """A trainer calling :func:`sciprune.ensemble.fit_many` once for all models (same data), each
    model's hooks given to it alone (:class:`PerMember`)."""
    from .ensemble import fit_many

    def train(models, config, hooks, *, final, names):
        per = None if all(not h for h in hooks) else [PerMember(hooks)]
        return fit_many(models, data, config, max_members=max_members, hooks=per)

    return train


class _One:
    """The state of one member as a hook of that member alone sees it: ``members``, ``indices``, and its own
    entries of ``loss``, ``train_loss`` and ``val_loss`` (lists of one, as for a one-member ensemble);
    ``params`` is None (the member's parameters are its own, views of the stacked ones); the rest shared."""

    def __init__(self, state, member: nn.Module, index: int, row: int) -> None:
        self._state, self.members, self.model, self.indices, self.params = state, [member], member, [index], None
        for name in ("train_loss", "val_loss"):
            v = getattr(state, name, None)
            setattr(self, name, [v[row]] if isinstance(v, list) else v)
        loss = getattr(state, "loss", None)
        self.loss = loss[row:row + 1] if isinstance(loss, torch.Tensor) and loss.ndim == 1 else loss

    def __getattr__(self, name):
        return getattr(self._state, name)


@torch.no_grad()
def _lend(member: nn.Module, params: dict[str, torch.Tensor], row: int) -> None:
    """The member's ``.grad``: views of its row of the stacked gradients (None where there is none)."""
    for name, p in member.named_parameters():
        g = params[name].grad
        p.grad = None if g is None else g[row]


class PerMember:
    """One ensemble hook that gives each member its own hooks: ``hooks[i]`` (a list, or None) for the
    member at position i of the models trained (``state.indices``). Such a hook sees a state whose
    ``members`` is that member alone (:class:`_One`); ``stop`` set by one ends the training of the group.
    A hook with ``reads_grad = True`` finds the member's gradient of the step in ``.grad`` at
    ``after_step`` (lent from the stacked gradient for the call: the ensemble clears member gradients)."""

    EVENTS = ("after_backward", "after_step", "end_of_epoch")

    def __init__(self, hooks: Sequence[list | None]) -> None:
        self.hooks = [list(h or []) for h in hooks]
        for event in self.EVENTS:
            if any(getattr(h, event, None) is not None for hs in self.hooks for h in hs):
                setattr(self, event, self._caller(event))

    def _caller(self, event: str):
        def call(state) -> None:
            stacked = getattr(state, "params", None) if event == "after_step" else None
            for row, (member, index) in enumerate(zip(state.members, state.indices)):
                for h in self.hooks[index]:
                    fn = getattr(h, event, None)
                    if fn is None:
                        continue
                    lend = stacked is not None and getattr(h, "reads_grad", False)
                    if lend:
                        _lend(member, stacked, row)
                    one = _One(state, member, index, row)
                    try:
                        fn(one)
                    finally:
                        if lend:
                            for p in member.parameters():
                                p.grad = None
                    if one.__dict__.get("stop"):
                        state.stop = True

        return call
