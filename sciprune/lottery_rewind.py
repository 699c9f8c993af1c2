"""The pieces of lottery-ticket experiments: weights stored at a step, rewinding, the retraining budget,
and the two random controls.

- :class:`Rewind`: a training hook that stores each member's weights after optimiser step k (k = 0: the
  initialisation, before the first step), under :func:`sciprune.fit` and per member under
  :func:`sciprune.ensemble.fit_many`; :func:`check_rewind_step` refuses a bad k before training.
- :func:`rewind`: kept weights set to the stored step-k values bit for bit; pruned ones stay exactly 0
  (Frankle & Carbin 2019, k = 0; Renda et al. 2020 weight rewinding, k > 0).
- :func:`retrain`: a fresh optimiser trained for the T - k optimiser steps left after step k, the
  learning rate at each step that of step k + j of the original run (open_lth ``train(start_step=k)``).
- :func:`reinitialize`: same masks, new seeded initial weights (Liu et al. 2019, "random re-init";
  open_lth ``randomly_reinitialize``); :func:`random_mask`: the random-mask control (open_lth
  ``randomly_prune``, strategies ``layerwise`` / ``global``) with the ``random`` criterion's scores.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from .checks import check_choice, check_int, check_seed
from .errors import SciPruneError
from .masks import get_masks, mask_pairs, set_masks
from .pruning import scores as _scores
from .selection import select
from .ensemble import fit_many
from .training import TrainConfig, _resolve, fit

__all__ = ["Rewind", "check_rewind_step", "steps_per_epoch", "snapshot", "rewind", "resume_config", "retrain",
           "retrain_many", "check_shared_config", "reinitialize", "random_mask", "MASK_STRATEGIES"]

#: ``random_mask`` strategies (open_lth ``randomly_prune``): each layer keeps its own count, or one count
#: over the whole pool.
MASK_STRATEGIES = ("layerwise", "global")


def steps_per_epoch(config: TrainConfig, n_train: int) -> int:
    """Optimiser steps per epoch of :func:`sciprune.fit`: ceil(n / b), b = batch size (n when None)."""
    n = check_int(n_train, "n_train (training rows)", lo=1)
    return 1 if config.batch_size is None else math.ceil(n / min(int(config.batch_size), n))


def check_rewind_step(step, config: TrainConfig, n_train: int) -> int:
    """``step`` as an int in [0, T), T = epochs x steps per epoch (the training length in optimiser steps),
    else a one-line :class:`SciPruneError`; checked before any training. k = T would leave nothing to
    retrain. A learning-rate schedule that depends on the validation history (``plateau``) cannot be
    resumed at k > 0."""
    if not isinstance(config, TrainConfig):
        raise SciPruneError(f"config must be a sciprune.TrainConfig, got {type(config).__name__}")
    k = check_int(step, "rewind_step (optimiser step k)", lo=0)
    per = steps_per_epoch(config, n_train)
    total = int(config.epochs) * per
    if k >= total:
        raise SciPruneError(f"rewind_step {k} is beyond the training length: {config.epochs} epochs x {per} "
                            f"steps = {total} optimiser steps; k must be in [0, {total})")
    if k > 0 and config.lr_schedule == "plateau":
        raise SciPruneError("rewind_step > 0 resumes the learning-rate schedule at step k; lr_schedule 'plateau' "
                            "depends on the validation history and cannot be resumed: use constant, cosine or step")
    return k


@torch.no_grad()
def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model.state_dict()`` (parameters and persistent buffers; masks are not part of it)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Rewind:
    """A training hook storing a copy of every member's state after optimiser step ``step`` (k).

    k = 0 stores the initialisation (at the first ``after_backward``, before the first step); k > 0 at
    ``after_step`` of step k. ``weights[i]``: the copy of member i (``state.indices``; 0 under
    :func:`sciprune.fit`), ``at(i)`` the same. A training that ends before step k raises
    :class:`SciPruneError` at its last epoch (check k beforehand with :func:`check_rewind_step`).
    """

    def __init__(self, step: int) -> None:
        self.step = check_int(step, "rewind step (optimiser step k)", lo=0)
        self.weights: dict[int, dict[str, torch.Tensor]] = {}
        # only the event that stores is exposed: an after_backward costs the ensemble a gradient view per step
        self.after_backward = self._store if self.step == 0 else None
        self.after_step = self._store if self.step > 0 else None

    def _store(self, state) -> None:
        if state.step != max(self.step, 1) or self._has(state):
            return
        for i, member in zip(getattr(state, "indices", [0]), state.members):
            self.weights[i] = snapshot(member)

    def _has(self, state) -> bool:
        return all(i in self.weights for i in getattr(state, "indices", [0]))

    def end_of_epoch(self, state) -> None:
        if (state.epoch >= state.epochs or state.stop) and not self._has(state):
            raise SciPruneError(f"rewind step {self.step} was never reached: the training ended at optimiser "
                                f"step {state.step}; choose a step below the training length")

    def at(self, index: int = 0) -> dict[str, torch.Tensor]:
        """The stored state of member ``index`` (0 under ``sciprune.fit``)."""
        if index not in self.weights:
            raise SciPruneError(f"no weights stored for member {index} at step {self.step}: train with this hook first")
        return self.weights[index]


@torch.no_grad()
def rewind(model: nn.Module, stored: dict[str, torch.Tensor]) -> None:
    """Set ``model``'s state to ``stored`` (a :func:`snapshot` or ``Rewind.at(i)``) with its masks held.

    w <- m * w_k: kept entries become the stored values bit for bit, pruned entries (weights, and biases
    with a bias mask) exactly +0. Masks are left as they are. Every key of the model's state must be in
    ``stored`` with its shape."""
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(stored, dict):
        raise SciPruneError(f"stored must be a dict of name -> tensor (sciprune.lottery_rewind.snapshot), "
                            f"got {type(stored).__name__}")
    own = model.state_dict()
    bad = [k for k, v in own.items() if k not in stored or tuple(stored[k].shape) != tuple(v.shape)]
    if bad:
        raise SciPruneError(f"stored weights do not fit this model: missing or misshaped {bad[:4]}")
    for k, v in own.items():
        v.copy_(stored[k])
    for p, m in mask_pairs(model):
        p.masked_fill_(~m, 0.0)


def resume_config(config: TrainConfig, n_train: int, start: int) -> TrainConfig:
    """The retraining after rewinding to step k = ``start``: ``config`` resumed at optimiser step k
    (``TrainConfig.start_step``: the learning-rate schedule, the mini-batch order and the step count of
    the original run continue from step k, with a fresh optimiser, for the T - k steps left). k = 0 is
    ``config`` itself."""
    k = check_rewind_step(start, config, n_train)
    return config if k == 0 else replace(config, start_step=k)


def retrain(model: nn.Module, data, config: TrainConfig, *, rewind_step: int = 0, loss: str | None = None,
            val=None):
    """Train ``model`` in place with a fresh optimiser for the budget left after step ``rewind_step`` of a
    run of ``config`` (:func:`resume_config`); masks held. Returns the :class:`sciprune.History`."""
    return fit(model, data, resume_config(config, _n_rows(data), rewind_step), loss=loss, val=val)


def retrain_many(models: list[nn.Module], data, config: TrainConfig | list[TrainConfig], *, rewind_step: int = 0,
                 loss: str | None = None, val=None, max_members: int | None = None) -> list:
    """:func:`retrain` of many models at once with :func:`sciprune.ensemble.fit_many` (``config``: one, or
    one per model differing only in ``seed``; ``data``, ``val``: shared or one per model)."""
    cfgs = check_shared_config(config if isinstance(config, list) else [config] * len(models))
    first = data[0] if isinstance(data, list) else data
    return fit_many(models, data, [resume_config(c, _n_rows(first), rewind_step) for c in cfgs], loss=loss,
                    val=val, max_members=max_members)


def check_shared_config(configs: list) -> list[TrainConfig]:
    """``configs`` if every entry is a TrainConfig equal to the first but for ``seed``, else a one-line error
    (members trained together share the learning-rate schedule and the training length)."""
    for i, c in enumerate(configs):
        if not isinstance(c, TrainConfig):
            raise SciPruneError(f"config[{i}] must be a sciprune.TrainConfig, got {type(c).__name__}")
        if replace(c, seed=0) != replace(configs[0], seed=0):
            raise SciPruneError(f"config[{i}] differs from config[0] in more than seed; members of one lottery run "
                                "share every training setting but the seed")
    return configs


def _n_rows(data) -> int:
    return int(_resolve(data, None)[0].shape[0])


@torch.no_grad()
def reinitialize(model: nn.Module, seed: int) -> None:
    """New random initial weights drawn from ``seed``, masks kept (pruned entries stay 0): every module
    with parameters of its own calls its ``reset_parameters()`` (nn.Linear: U(-1/sqrt(fan_in),
    1/sqrt(fan_in)), PyTorch's default), in module order, under a private fork of the global RNG (Liu et
    al. 2019's random re-initialisation; open_lth ``randomly_reinitialize``)."""
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    seed = check_seed(seed)
    owners = [m for m in model.modules() if next(m.parameters(recurse=False), None) is not None]
    bad = [type(m).__name__ for m in owners if not callable(getattr(m, "reset_parameters", None))]
    if bad:
        raise SciPruneError(f"reinitialize needs reset_parameters() on every module with parameters; {bad[0]} has none")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in owners:
            m.reset_parameters()
    for p, m in mask_pairs(model):
        p.masked_fill_(~m, 0.0)


def random_mask(model: nn.Module, like: dict[str, torch.Tensor], seed: int, *, strategy: str = "layerwise") -> int:
    """Prune the unpruned ``model`` at random with the counts of the keep-masks ``like`` (name -> bool, e.g.
    ``sciprune.get_masks(ticket)``): ``layerwise`` prunes in each tensor as many as ``like`` does there,
    ``global`` as many as ``like`` does over all of its tensors, anywhere among them. The lowest scores of
    the ``random`` criterion (i.i.d. U(0, 1) from ``seed``) go first. Returns the number pruned."""
    check_choice(strategy, MASK_STRATEGIES, "strategy")
    if not isinstance(like, dict) or not like:
        raise SciPruneError(f"like must be a non-empty dict of name -> bool keep-mask, got {type(like).__name__}")
    names = list(like)
    current = get_masks(model, names=names)
    shapes = [n for n in names if tuple(like[n].shape) != tuple(current[n].shape)]
    if shapes:
        raise SciPruneError(f"like does not fit this model: shapes differ for {shapes[:4]}")
    if any(not bool(m.all()) for m in current.values()):
        raise SciPruneError("random_mask needs an unpruned model (masks only shrink): start from a dense copy")
    score = _scores(model, "random", names=names, seed=check_seed(seed))
    pruned = {n: int((~like[n].bool()).sum()) for n in names}
    if strategy == "global":
        total = sum(s.numel() for s in score.values())
        keep = select(score, sum(pruned.values()) / total, scope="global")
    else:
        keep = {n: (torch.zeros_like(score[n], dtype=torch.bool) if pruned[n] == score[n].numel() else  # all gone
                    select({n: score[n]}, pruned[n] / score[n].numel(), scope="global")[n]) for n in names}
    set_masks(model, keep)
    return sum(int((~k).sum()) for k in keep.values())
