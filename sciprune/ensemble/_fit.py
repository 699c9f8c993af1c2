"""Train M same-shaped models at once, reproducing :func:`sciprune.fit` member by member.

Member ``m`` has its own initial weights, masks, data realisation (its own Y noise, its own X when
splits differ) and shuffling seed. The loop stacks the parameters (``(M, *shape)`` tensors), runs one
batched forward (:func:`sciprune.ensemble.ensemble_forward`) and minimises ``sum_m L_m`` where
``L_m`` is member ``m``'s mean loss on its own mini-batch: d(sum_k L_k)/d theta_m = dL_m/d theta_m,
so the gradients stay separate. Adam, AdamW and SGD with momentum update every entry from that
entry's gradient and state alone (Kingma & Ba 2015, Alg. 1; Loshchilov & Hutter 2019, Alg. 2;
the bias corrections depend only on the step count, shared by all members), so ``torch.optim``
stepping on the stacked tensors *is* M independent updates with the hyper-parameters of ``fit``.
Masks are held as in :class:`sciprune.MaskedStep`: gradients masked before, weights after each step.

Hooks (``hooks=[...]``, the events of :func:`sciprune.fit`) see an
:class:`~sciprune.ensemble.EnsembleFitState` whose ``members`` are the member modules themselves,
their parameters views of the stacked tensors during the run; masks a hook sets or shrinks on a
member are held from the next step on, with the stacked optimiser state of newly pruned entries
zeroed (design: :mod:`sciprune.ensemble._hooks`). Without hooks the loop is unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace

import torch
from torch import nn

from ..data._types import TaskData
from ..errors import SciPruneError
from .. import losses as _losses
from ..hooks import resolve_hooks
from ..masks import enforce, mask_grads
from ..training import (
    History,
    TrainConfig,
    _make_optimizer,
    _make_scheduler,
    resume_point,
    _resolve,
)
from ._evaluate import _eval, _eval_chunk, _member_losses, _per_member, _stack_rows, _take, _whole
from ._hooks import (
    EnsembleFitState,
    StackedMasks,
    alias_members,
    call_hooks,
    lend_grads,
    release_members,
    take_grads,
)
from ._stack import (
    check_same_architecture,
    ensemble_forward,
    stack_models,
    unstack,
)

__all__ = ["fit_ensemble", "ENSEMBLE_OPTIMIZERS", "ENSEMBLE_SCHEDULES"]

ENSEMBLE_OPTIMIZERS = ("adam", "adamw", "sgd")
ENSEMBLE_SCHEDULES = ("constant", "cosine", "step")
ProgressFn = Callable[[int, int, list, list], None]


def _unsupported(cfg: TrainConfig) -> str | None:
    if cfg.optimizer not in ENSEMBLE_OPTIMIZERS:
        return f"optimizer {cfg.optimizer!r} (supported: {', '.join(ENSEMBLE_OPTIMIZERS)})"
    if cfg.lr_schedule not in ENSEMBLE_SCHEDULES:
        return f"lr_schedule {cfg.lr_schedule!r} (supported: {', '.join(ENSEMBLE_SCHEDULES)})"
    if cfg.patience is not None:
        return "early stopping (patience)"
    return None


def _shared_config(configs, M: int) -> tuple[TrainConfig, list[int]]:
    cfgs = _per_member(TrainConfig() if configs is None else configs, M, "configs", (TrainConfig,))
    c0 = cfgs[0]
    for i, c in enumerate(cfgs):
        if not isinstance(c, TrainConfig):
            raise SciPruneError(f"configs[{i}] must be a TrainConfig, got {type(c).__name__}")
        why = _unsupported(c)
        if why is not None:
            raise SciPruneError(f"fit_ensemble does not support {why}; train such members with sciprune.fit")
        if replace(c, seed=0) != replace(c0, seed=0):
            diff = [f.name for f in fields(TrainConfig) if f.name != "seed" and getattr(c, f.name) != getattr(c0, f.name)]
            raise SciPruneError(
                f"members of one ensemble must share every TrainConfig field but seed; member {i} differs from "
                f"member 0 in {diff}; use sciprune.ensemble.fit_many to group them"
            )
    return c0, [int(c.seed) for c in cfgs]


def fit_ensemble(
    models: Sequence[nn.Module],
    data,
    configs: TrainConfig | list[TrainConfig] | None = None,
    *,
    loss: str | None = None,
    val=None,
    progress: ProgressFn | None = None,
    forward: str = "auto",
    prefetch: bool | None = None,
    hooks: list | None = None,
    member_ids: Sequence[int] | None = None,
) -> list[History]:
    """Train ``models`` (M of one architecture) in place in one vectorised loop; one History each.

    Member m's result equals ``sciprune.fit(models[m], data[m], configs[m], loss=loss, val=val[m])``
    up to floating-point reassociation in the batched matmuls and reductions (float64: below 1e-13
    in the tests).

    Args:
        models: M modules of one architecture, dtype and device (masks may differ).
        data: one ``(X, Y)`` or TaskData shared by all members, or a list with one per member
            (X (N, in), Y (N, out) float or (N,) int64 labels; N equal for all members).
        configs: one TrainConfig (default ``TrainConfig()``) or one per member; all fields but ``seed``
            must agree. Supported: adam/adamw/sgd, constant/cosine/step schedules, no early stopping
            (else use ``sciprune.fit``, or :func:`sciprune.ensemble.fit_many`, which falls back to it).
        loss: ``mse`` or ``cross_entropy``; default from the dtype of Y as in ``fit``.
        val: None, one ``(X, Y)`` shared, or a list of one per member (a TaskData brings its own).
        progress: ``progress(epoch, epochs, train_losses, val_losses)`` (lists over members) per evaluation.
        forward: ``auto``, ``bmm`` or ``vmap`` (see :func:`ensemble_forward`).
        prefetch: draw the next epoch's permutations on CPU threads while the device computes
            (default: on for non-CPU devices).
        hooks: objects with optional ``after_backward``, ``after_step``, ``end_of_epoch`` methods,
            called as by ``sciprune.fit`` once per event for the whole ensemble with an
            :class:`EnsembleFitState` (``members``, ``indices``, ...); masks they set or shrink on a
            member are held from the next step on.
        member_ids: the labels hooks see as ``state.indices`` (default ``0..M-1``).
    """
    models = list(models)
    check_same_architecture(models)
    M = len(models)
    events = resolve_hooks(hooks)
    on_backward, on_step, on_epoch = (events[e] for e in ("after_backward", "after_step", "end_of_epoch"))
    ids = list(range(M)) if member_ids is None else [int(i) for i in member_ids]
    if len(ids) != M:
        raise SciPruneError(f"member_ids must have one entry per member; got {len(ids)} for {M} members")
    if hooks and len({id(m) for m in models}) != M:
        raise SciPruneError("with hooks every member must be a distinct module; the same module was passed twice")
    cfg, seeds = _shared_config(configs, M)
    p0 = next(models[0].parameters())
    device, dtype = p0.device, p0.dtype
    datas = _per_member(data, M, "data", (tuple, TaskData))
    vals = _per_member(val, M, "val", (tuple,))
    resolved = [_resolve(d, v) for d, v in zip(datas, vals)]
    X, xs = _stack_rows([r[0] for r in resolved], device, dtype, "X")
    Y, ys = _stack_rows([r[1] for r in resolved], device, dtype, "Y")
    n = X.shape[0] if xs else X.shape[1]
    if (Y.shape[0] if ys else Y.shape[1]) != n:
        raise SciPruneError(f"X and Y must have the same number of rows, got {n} and {Y.shape[0 if ys else 1]}")
    loss = _losses.resolve(loss, Y)
    has_val = [v is not None and v[0] is not None and len(v[0]) > 0 for v in (r[2] for r in resolved)]
    if any(has_val) and not all(has_val):
        raise SciPruneError("val must be given for every member or for none; got a validation set for some members")
    if all(has_val):
        Xv, xvs = _stack_rows([r[2][0] for r in resolved], device, dtype, "X_val")
        Yv, yvs = _stack_rows([r[2][1] for r in resolved], device, dtype, "Y_val")

    fwd = ensemble_forward(models[0], forward)
    params = stack_models(models, requires_grad=True)
    held = StackedMasks(models, params)
    opt = _make_optimizer(list(params.values()), cfg)
    state = EnsembleFitState(members=models, indices=ids, optimizer=opt, epochs=int(cfg.epochs),
                             params=params) if hooks else None
    saved: list = []
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    bs = n if cfg.batch_size is None else min(int(cfg.batch_size), n)
    epochs = int(cfg.epochs)
    done, first = resume_point(cfg, n, bs)  # (0, 0) unless resuming at start_step, as in sciprune.fit
    for g in gens if bs < n else ():
        for _ in range(done):  # the epochs before the resumed one drew their orders
            torch.randperm(n, generator=g)
    sched = _make_scheduler(opt, cfg, done)
    if state is not None:
        state.step = int(cfg.start_step)
    hists = [History() for _ in range(M)]
    best = [math.inf] * M
    if prefetch is None:
        prefetch = device.type != "cpu"
    pool = ThreadPoolExecutor(max_workers=max(1, min(M, os.cpu_count() or 1, 8))) if prefetch and bs < n else None

    # Permutations go straight into one of two (M, N) host buffers (pinned for CUDA), so the draw for
    # epoch e + 1 (on worker threads with prefetch) overlaps epoch e. torch's CPU randperm draws the
    # same permutation for int32 as for int64 (checked in the tests); int32 halves the copy to the device.
    idx_dtype = torch.int32 if n < 2**31 else torch.int64
    pin = device.type == "cuda"
    bufs = [torch.empty((M, n), dtype=idx_dtype, pin_memory=pin) for _ in range(2)] if bs < n else []
    copied: list = [None, None]  # CUDA events: the copy out of each buffer has finished

    def draw(k: int):
        if copied[k] is not None:
            copied[k].synchronize()
        jobs = [(g, bufs[k][i]) for i, g in enumerate(gens)]
        if pool is None:
            for g, row in jobs:
                torch.randperm(n, generator=g, out=row)
            return []
        return [pool.submit(torch.randperm, n, generator=g, out=row) for g, row in jobs]

    pending = draw(done % 2) if bs < n else []
    for m in models:
        m.train()
    try:
        if state is not None:
            alias_members(models, params, saved)
        for epoch in range(done + 1, epochs + 1):
            if state is not None:
                state.start_epoch(epoch)
            order = None
            if bs < n:
                k = (epoch - 1) % 2
                for f in pending:
                    f.result()
                order = bufs[k].to(device, non_blocking=pin)
                if pin:
                    copied[k] = torch.cuda.Event()
                    copied[k].record()
                if epoch < epochs:
                    pending = draw(1 - k)
            running, seen = torch.zeros(M, dtype=torch.float64, device=device), 0
            for s in range((first if epoch == done + 1 else 0) * bs, n, bs):
                if state is not None:
                    state.step += 1
                if order is None:
                    xb, yb = _whole(X, xs, M), _whole(Y, ys, M)
                else:
                    idx = order[:, s : s + bs]
                    xb, yb = _take(X, xs, idx), _take(Y, ys, idx)
                opt.zero_grad(set_to_none=True)
                losses = _member_losses(loss, fwd(params, xb), yb)
                losses.sum().backward()
                if on_backward:
                    state.loss = losses.detach()
                    lend_grads(models, params)
                    call_hooks(on_backward, state, held)
                    take_grads(models)
                mask_grads(held.pairs)
                opt.step()
                enforce(held.pairs)
                running += losses.detach().to(torch.float64) * xb.shape[1]
                seen += xb.shape[1]
                if on_step:
                    state.loss = losses.detach()
                    call_hooks(on_step, state, held)
                if state is not None and state.stop:
                    break
            train = (running / seen).tolist()
            bad = [i for i, v in enumerate(train) if not math.isfinite(v)]
            if bad:
                raise SciPruneError(f"training diverged at epoch {epoch} for member(s) {bad} "
                                    f"(loss {[train[i] for i in bad]}); lower the learning rate")
            stop = state is not None and state.stop
            if epoch % cfg.eval_every == 0 or epoch == epochs or stop:
                if all(has_val):
                    for m in models:
                        m.eval()
                    vl = _eval(fwd, params, Xv, xvs, Yv, yvs, loss, M, _eval_chunk(M)).tolist()
                    for m in models:
                        m.train()
                else:
                    vl = [math.nan] * M
                for i, h in enumerate(hists):
                    h.epoch.append(epoch)
                    h.train_loss.append(train[i])
                    h.val_loss.append(vl[i])
                    if all(has_val) and vl[i] < best[i]:
                        best[i], h.best_epoch = vl[i], epoch
                if progress is not None:
                    progress(epoch, epochs, train, vl)
                if on_epoch:
                    state.val_loss = vl
            if on_epoch:
                state.train_loss = train
                call_hooks(on_epoch, state, held)
                stop = state.stop
            if stop:
                break
            if sched is not None:
                sched.step()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        release_members(saved)
        unstack(params, models)
        for m in models:
            m.eval()
    return hists
