"""Fit and fine-tune with masks held: Adam, SGD or L-BFGS, schedules, early stopping.

The data stay resident on the model's device; mini-batches are index slices drawn from a seeded
generator, so a run is deterministic on CPU. Masks set by :mod:`sciprune.masks` are held at every
step (gradients masked before, weights masked after), including masks set or shrunk during the
run by a training hook (:mod:`sciprune.hooks`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import InitVar, asdict, dataclass, field
from typing import Callable

import torch
from torch import nn

from .batches import as_tensor, check_pair, model_shapes
from .checks import MAX_EPOCHS, SEED_LIMIT, check_choice, check_int, check_number
from .data._types import TaskData
from .errors import SciPruneError
from .hooks import FitState, resolve_hooks
from .masks import MaskedStep, enforce, mask_version
from . import losses

__all__ = ["TrainConfig", "History", "fit", "evaluate_loss"]

OPTIMIZERS = ("adam", "adamw", "sgd", "lbfgs")
LR_SCHEDULES = ("constant", "cosine", "step", "plateau")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. ``epochs`` counts passes over the training set.

    ``lr_schedule`` (the learning-rate schedule; pruning schedules are :mod:`sciprune.schedules`):
    ``constant``; ``cosine`` (to 0 over the run); ``step`` (x ``gamma`` every
    ``step_size`` epochs); ``plateau`` (x ``gamma`` after ``step_size`` epochs without validation
    improvement). ``patience``: early stopping after that many epochs without validation improvement,
    restoring the best weights (None: off). ``batch_size`` None means full batch.
    ``start_step``: the run starts after that many optimiser steps of a run of these settings: the
    learning-rate schedule, the mini-batch order and the step count continue from there, with a fresh
    optimiser, to the end of ``epochs`` (so ``epochs x steps per epoch - start_step`` steps are
    taken). Resuming from weights rewound to step k (lottery tickets, Renda et al. 2020; open_lth's
    retraining) with ``start_step = k`` is, for plain SGD, the uninterrupted run from step k. Not with
    ``plateau`` (its state depends on the validation losses seen) or L-BFGS.
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    epochs: int = 1000
    batch_size: int | None = None
    weight_decay: float = 0.0
    momentum: float = 0.9
    lr_schedule: str = "constant"
    step_size: int = 100
    gamma: float = 0.5
    patience: int | None = None
    seed: int = 0
    eval_every: int = 1
    start_step: int = 0
    schedule: InitVar[str | None] = None  # the old name of lr_schedule: refused with the new name

    def __post_init__(self, schedule: str | None) -> None:
        if schedule is not None:
            raise SciPruneError(f"TrainConfig's schedule was renamed lr_schedule (the learning-rate schedule), "
                                f"got schedule={schedule!r}; pruning schedules are sciprune.schedules")
        check_choice(self.optimizer, OPTIMIZERS, "optimizer")
        check_choice(self.lr_schedule, LR_SCHEDULES, "lr_schedule")
        check_number(self.lr, "lr", positive=True)
        check_int(self.epochs, "epochs", lo=0, hi=MAX_EPOCHS)
        check_int(self.batch_size, "batch_size", lo=1, none_ok=True)
        check_number(self.weight_decay, "weight_decay")
        check_number(self.momentum, "momentum")
        check_int(self.step_size, "step_size (epochs)", lo=1)
        if check_number(self.gamma, "gamma", positive=True) >= 1:
            raise SciPruneError(f"gamma must be a decay factor in (0, 1), got {self.gamma!r}")
        check_int(self.patience, "patience", lo=1, none_ok=True)
        check_int(self.seed, "seed", lo=0, hi=SEED_LIMIT - 1)
        check_int(self.eval_every, "eval_every", lo=1)
        check_int(self.start_step, "start_step", lo=0)
        if self.start_step and (self.lr_schedule == "plateau" or self.optimizer == "lbfgs"):
            raise SciPruneError(f"start_step resumes a run from a given optimiser step; not with "
                                f"{'the plateau schedule' if self.lr_schedule == 'plateau' else 'L-BFGS'}: use "
                                "adam, adamw or sgd with a constant, cosine or step schedule")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """Per-evaluation record of a run: epochs, training loss, validation loss (NaN without one)."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False

    @property
    def final_train_loss(self) -> float:
        return self.train_loss[-1] if self.train_loss else math.nan


def _make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=20, history_size=20, line_search_fn="strong_wolfe")


def _make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, start_epoch: int = 0):
    """The learning-rate scheduler of ``cfg`` (None for constant), stepped ``start_epoch`` times."""
    if cfg.lr_schedule == "cosine":
        return _advance(torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(int(cfg.epochs), 1)), start_epoch)
    if cfg.lr_schedule == "step":
        return _advance(torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma), start_epoch)
    if cfg.lr_schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(  # torch reduces after patience + 1 bad epochs; the documented rule is step_size
            opt, factor=cfg.gamma, patience=cfg.step_size - 1)
    return None


def _advance(sched, epochs: int):
    """``sched`` stepped ``epochs`` times before training (its learning rate is then that of epoch
    ``epochs + 1`` of an uninterrupted run, by the same chained arithmetic)."""
    import warnings

    with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs):
            sched.step()
    return sched


def resume_point(cfg: TrainConfig, n: int, bs: int) -> tuple[int, int]:
    """``(epochs done, batches done in the next epoch)`` at ``cfg.start_step`` for ``n`` samples in
    mini-batches of ``bs``; a start at or beyond the run's last step is one line."""
    per = math.ceil(n / bs)
    if cfg.start_step >= int(cfg.epochs) * per and cfg.start_step:
        raise SciPruneError(f"start_step {cfg.start_step} is not before the end of the run ({cfg.epochs} epochs x "
                            f"{per} steps = {int(cfg.epochs) * per} optimiser steps)")
    return divmod(int(cfg.start_step), per)


@torch.no_grad()
def evaluate_loss(model: nn.Module, X: torch.Tensor, Y: torch.Tensor, loss: str, *, batch_size: int = 65536) -> float:
    """Mean ``loss`` of ``model`` over (X, Y), evaluated in chunks without gradients."""
    fn = losses.torch_fn(loss)
    was = model.training
    model.eval()
    total = 0.0
    for s in range(0, X.shape[0], batch_size):
        total += float(fn(model(X[s : s + batch_size]), Y[s : s + batch_size], reduction="sum"))
    model.train(was)
    per = X.shape[0] * (Y.shape[1] if loss == "mse" and Y.ndim > 1 else 1)
    return total / per


def _resolve(task_or_data, val):
    if val is not None and not (isinstance(val, tuple) and len(val) == 2):
        raise SciPruneError(f"val must be None or a tuple (X_val, Y_val), got {type(val).__name__}")
    if isinstance(task_or_data, TaskData):
        t = task_or_data
        return t.X_train, t.Y_train, (val if val is not None else (t.X_val, t.Y_val)), t.task
    if isinstance(task_or_data, tuple) and len(task_or_data) == 2:
        X, Y = task_or_data
        return X, Y, val, None
    raise SciPruneError(f"training data must be a TaskData or a tuple (X, Y), got {type(task_or_data).__name__}")


def _check_fit_args(model, config, progress) -> None:
    if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        raise SciPruneError(f"model must be a torch.nn.Module with parameters, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise SciPruneError(f"config must be a sciprune.TrainConfig, got {type(config).__name__}; "
                            "use TrainConfig(**settings)")
    if progress is not None and not callable(progress):
        raise SciPruneError(f"progress must be a callable or None, got {type(progress).__name__}")


def _check_optimizer(optimizer, model: nn.Module, config: TrainConfig) -> None:
    """An optimiser to go on with: a torch optimiser over exactly the model's trainable parameters."""
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise SciPruneError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    held = {id(p) for g in optimizer.param_groups for p in g["params"]}
    if held != {id(p) for p in model.parameters() if p.requires_grad}:
        raise SciPruneError("optimizer must hold exactly the model's trainable parameters; after compaction use "
                            "the optimiser sciprune.compact_training.compact_in_training returns")
    if config.lr_schedule != "constant" or config.start_step:
        raise SciPruneError(f"with an optimizer to go on with, lr_schedule must be 'constant' and start_step 0 (got "
                            f"{config.lr_schedule!r}, {config.start_step}): a schedule would rewrite its learning rate")


def _call(fns, state: FitState, step: MaskedStep) -> None:
    """Run hooks for one event; after each, pick up any mask it changed (and mask optimiser state)."""
    for fn in fns:
        fn(state)
        step.refresh()


def fit(
    model: nn.Module,
    data,
    config: TrainConfig = TrainConfig(),
    *,
    loss: str | None = None,
    val: tuple | None = None,
    progress: Callable[[int, int, float, float], None] | None = None,
    hooks: list | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> History:
    """Train ``model`` in place on ``data`` (a TaskData or ``(X, Y)``), holding any masks.

    ``loss`` defaults to ``mse`` for floating targets and ``cross_entropy`` for integer labels.
    ``val`` (X, Y) enables early stopping and the plateau schedule (a TaskData brings its own).
    ``progress(epoch, epochs, train_loss, val_loss)`` is called at each evaluation.
    ``hooks``: objects with optional ``after_backward``, ``after_step``, ``end_of_epoch`` methods
    taking a :class:`sciprune.hooks.FitState` (see :mod:`sciprune.hooks`); masks they set or shrink
    are held from the next step on. With early stopping the best weights are restored and then
    multiplied by the masks held at the end.
    ``optimizer``: go on with this optimiser and its state (over ``model``'s parameters, e.g. from
    :func:`sciprune.compact_training.compact_in_training`) instead of a new one made from ``config``,
    whose optimiser settings are then unused; with a ``constant`` learning-rate schedule only.
    """
    _check_fit_args(model, config, progress)
    _check_optimizer(optimizer, model, config)
    events = resolve_hooks(hooks)
    on_backward, on_step, on_epoch = (events[e] for e in ("after_backward", "after_step", "end_of_epoch"))
    p0 = next(model.parameters())
    device, dtype = p0.device, p0.dtype
    shapes = model_shapes(model)
    X, Y, val, _ = _resolve(data, val)
    X, Y = check_pair(as_tensor(X, device=device, dtype=dtype, name="X"),
                      as_tensor(Y, device=device, dtype=dtype, name="Y"), shapes)
    loss = losses.resolve(loss, Y)
    fn = losses.torch_fn(loss)
    if val is not None and val[0] is not None and len(val[0]) > 0:
        Xv, Yv = check_pair(as_tensor(val[0], device=device, dtype=dtype, name="X_val"),
                            as_tensor(val[1], device=device, dtype=dtype, name="Y_val"), shapes, names=("X_val", "Y_val"))
    else:
        Xv = Yv = None
    if (config.patience is not None or config.lr_schedule == "plateau") and Xv is None:
        raise SciPruneError("early stopping and the plateau schedule need a validation set")

    opt = _make_optimizer(model.parameters(), config) if optimizer is None else optimizer
    gen = torch.Generator().manual_seed(int(config.seed))
    n = X.shape[0]
    bs = n if config.batch_size is None else min(int(config.batch_size), n)
    done, first = resume_point(config, n, bs)  # (0, 0) unless resuming at start_step
    for _ in range(done if bs < n else 0):  # the epochs before the resumed one drew their orders
        torch.randperm(n, generator=gen)
    sched = _make_scheduler(opt, config, done)
    step = MaskedStep(opt, model)
    hist = History()
    best, best_state, since_best = math.inf, None, 0
    state = FitState(model=model, optimizer=opt, epochs=int(config.epochs), step=int(config.start_step)) if hooks else None
    version = mask_version()
    model.train()
    for epoch in range(done + 1, int(config.epochs) + 1):
        if state is not None:
            state.epoch, state.train_loss, state.val_loss = epoch, math.nan, math.nan
        order = torch.randperm(n, generator=gen).to(device) if bs < n else None
        running, seen = torch.zeros((), dtype=torch.float64, device=device), 0  # summed on the device: no sync per step
        for s in range((first if epoch == done + 1 else 0) * bs, n, bs):
            if state is not None:
                state.step += 1
            if order is None:
                xb, yb = X, Y
            else:
                idx = order[s : s + bs]
                xb, yb = X[idx], Y[idx]

            def closure():
                opt.zero_grad(set_to_none=True)
                value = fn(model(xb), yb)
                value.backward()
                if on_backward:
                    state.loss, state.batch = value.detach(), (xb, yb)
                    _call(on_backward, state, step)
                return value

            if config.optimizer == "lbfgs":
                value = step(closure)
            else:
                value = closure()
                step()
            running += value.detach().to(torch.float64) * xb.shape[0]
            seen += xb.shape[0]
            if on_step:
                state.loss = value.detach()
                _call(on_step, state, step)
            if state is not None and state.stop:
                break
        train_loss = float(running) / seen
        if not math.isfinite(train_loss):
            raise SciPruneError(f"training diverged at epoch {epoch} (loss {train_loss}); lower the learning rate")
        stop = state is not None and state.stop
        early = False
        if epoch % config.eval_every == 0 or epoch == config.epochs or stop:
            val_loss = evaluate_loss(model, Xv, Yv, loss) if Xv is not None else math.nan
            hist.epoch.append(epoch)
            hist.train_loss.append(train_loss)
            hist.val_loss.append(val_loss)
            if progress is not None:
                progress(epoch, int(config.epochs), train_loss, val_loss)
            if Xv is not None:
                if val_loss < best:
                    best, since_best, hist.best_epoch = val_loss, 0, epoch
                    if config.patience is not None:
                        best_state = copy.deepcopy(model.state_dict())
                else:
                    since_best += config.eval_every
                if config.patience is not None and since_best >= config.patience:
                    hist.stopped_early = early = True
            if on_epoch:
                state.train_loss, state.val_loss = train_loss, val_loss
        if on_epoch:
            state.train_loss = train_loss
            _call(on_epoch, state, step)
            stop = state.stop
        if early or stop:
            break
        if sched is not None:
            if config.lr_schedule == "plateau":
                if not math.isnan(hist.val_loss[-1] if hist.val_loss else math.nan):
                    sched.step(hist.val_loss[-1])
            else:
                sched.step()
    if best_state is not None:
        model.load_state_dict(best_state)
        if mask_version() != version:  # masks changed during the run: the restored weights obey them too
            step.refresh()
            enforce(step.pairs)
    model.eval()
    return hist
