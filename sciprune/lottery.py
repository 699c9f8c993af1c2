"""Lottery tickets with rewinding: iterative pruning, rewinding the kept weights to step k, retraining.

The protocol of open_lth (facebookresearch/open_lth @2ce732f; Frankle & Carbin 2019, k = 0; Frankle et
al. 2020 / Renda et al. 2020, k > 0): train the dense network for T optimiser steps, storing its
weights w_k after step k. Then per level: remove ceil(f x remaining) of the live weights of the pool
with the lowest scores (magnitude by default, any registered weight criterion), set the kept weights
back to w_k (pruned ones 0), and retrain with a fresh optimiser for the T - k steps left, the learning
rate of each step that of the original run's step k + j. The pool's sparsity after level L is
c_L / n with c_L = c_{L-1} + ceil(f (n - c_{L-1})), i.e. 1 - (1 - f)^L up to rounding; the last level
prunes to the target exactly. :func:`lottery_ticket` is built on :func:`sciprune.prune_scheduled`
(schedule :class:`~sciprune.schedules.Iterative`) with ``train_between`` rewinding and retraining;
:func:`lottery_tickets` runs many members at once (each its own masks) on the ensemble engine. The
pieces (rewinding, the retraining budget, the random controls) are in :mod:`sciprune.lottery_rewind`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from . import criteria as _criteria
from .checks import check_choice
from .ensemble import fit_many
from .errors import SciPruneError
from .lottery_rewind import Rewind, check_rewind_step, check_shared_config, retrain, retrain_many, rewind, snapshot
from .masks import prunable_names
from .procedure import prune_scheduled
from .pruning import PruneReport, apply_plan, plan
from .schedules import Iterative, check_target
from .selection import SCOPES
from .training import History, TrainConfig, _resolve, fit

__all__ = ["LotteryLevel", "LotteryResult", "lottery_ticket", "lottery_tickets", "OUTPUT"]

#: In ``exclude``: the weight of the model's last nn.Linear (the output layer; open_lth's LeNet default).
OUTPUT = "output"


@dataclass
class LotteryLevel:
    """One level: ``level`` 0 is the dense training; ``report`` the pruning that started the level (None
    at level 0); ``sparsity`` the pool's (``report.achieved``, 0 at level 0); ``history`` the training."""

    level: int
    sparsity: float
    report: PruneReport | None
    history: History

    @property
    def train_loss(self) -> float:
        return self.history.final_train_loss

    @property
    def val_loss(self) -> float:
        return self.history.val_loss[-1] if self.history.val_loss else float("nan")


@dataclass
class LotteryResult:
    """The levels of one model and ``rewind_state``, its stored state after step ``rewind_step``
    (for :func:`sciprune.lottery_rewind.rewind` and the random controls)."""

    levels: list[LotteryLevel] = field(default_factory=list)
    rewind_state: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    rewind_step: int = 0
    pool: list[str] = field(default_factory=list)


def _pool(model: nn.Module, exclude) -> list[str]:
    names = prunable_names(model)
    if isinstance(exclude, str) or not isinstance(exclude, (list, tuple)):
        raise SciPruneError(f"exclude must be a list of weight names (or {OUTPUT!r} for the output layer), "
                            f"got {exclude!r}")
    drop = {names[-1] if e == OUTPUT and names else e for e in exclude}
    unknown = sorted(str(e) for e in drop if e not in names)
    if unknown:
        raise SciPruneError(f"exclude {unknown} are not prunable weights of this model; prunable: {names}")
    pool = [n for n in names if n not in drop]
    if not pool:
        raise SciPruneError(f"exclude {list(exclude)} leaves no weight to prune")
    return pool


def _check(model, data, config, *, target, fraction, rewind_step, scope, exclude, method, options) -> tuple:
    """Every argument, before any training: (schedule, pool, rewind step)."""
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise SciPruneError(f"config must be a sciprune.TrainConfig, got {type(config).__name__}")
    if config.patience is not None:
        raise SciPruneError("lottery tickets train every level for the same budget; early stopping "
                            f"(patience={config.patience!r}) would cut it: set patience=None")
    check_target(target)
    schedule = Iterative(fraction=fraction, budget_epochs=int(config.epochs))
    check_choice(scope, SCOPES, "scope")
    crit = _criteria.get(method)
    if crit.granularity != "weight":
        raise SciPruneError(f"lottery tickets prune weights; method {method!r} removes {crit.granularity}s")
    if "names" in options:
        raise SciPruneError("lottery tickets prune the pool of every prunable weight but exclude=[...]; "
                            "pass exclude instead of names")
    unknown = sorted(set(options) - set(crit.options) - {"seed", "batch_size"})
    if unknown:
        raise SciPruneError(f"unknown option(s) {unknown} for method {method!r}; allowed: "
                            f"{', '.join(sorted(crit.options) + ['batch_size', 'seed'])}")
    n_train = int(_resolve(data, None)[0].shape[0])
    return schedule, _pool(model, exclude), check_rewind_step(rewind_step, config, n_train)


def lottery_ticket(
    model: nn.Module,
    data,
    config: TrainConfig,
    *,
    target: float,
    fraction: float = 0.2,
    rewind_step: int = 0,
    scope: str = "global",
    exclude: Sequence[str] = (),
    method: str = "magnitude",
    loss: str | None = None,
    val=None,
    on_level: Callable[[nn.Module, LotteryLevel], object] | None = None,
    **options,
) -> LotteryResult:
    """Find a lottery ticket of ``model`` (trained in place; it ends as the last level's trained ticket).

    Level 0 trains the dense model with ``config`` (T = epochs x ceil(n / batch) optimiser steps),
    storing its state after step ``rewind_step`` (k; 0 = the initialisation). Each further level prunes
    ``fraction`` of the remaining pool weights (ceil count, ``scope="global"``; with ``"layer"``, each
    layer to 1 - (1 - f)^L) ranked by ``method`` (scored on ``data`` with ``options``: ``seed``,
    ``batch_size``, the criterion's own; no bias compensation, since rewinding resets the biases),
    rewinds to the stored state with the masks held and retrains for T - k steps
    (:func:`sciprune.lottery_rewind.retrain`), until the pool reaches ``target``. ``exclude``: weight
    names left out of the pool (``"output"``: the last layer, open_lth's LeNet default). ``on_level(model,
    level)`` is called after each level's training (e.g. to evaluate or copy the ticket).
    Every argument is checked before the dense training.
    """
    schedule, pool, k = _check(model, data, config, target=target, fraction=fraction, rewind_step=rewind_step,
                               scope=scope, exclude=exclude, method=method, options=options)
    if on_level is not None and not callable(on_level):
        raise SciPruneError(f"on_level must be a function (model, level), got {on_level!r}")
    hook = Rewind(k) if k else None
    stored = snapshot(model) if k == 0 else None
    result = LotteryResult(rewind_step=k, pool=pool)

    def done(level: LotteryLevel) -> None:
        result.levels.append(level)
        if on_level is not None:
            on_level(model, level)

    done(LotteryLevel(0, 0.0, None, fit(model, data, config, loss=loss, val=val, hooks=[hook] if hook else None)))
    result.rewind_state = stored if hook is None else hook.at(0)
    reports: list[PruneReport] = []

    def train_level(m: nn.Module, _step: int | None = None) -> None:
        rewind(m, result.rewind_state)
        report = reports[len(result.levels) - 1]
        done(LotteryLevel(len(result.levels), float(report.achieved), report,
                          retrain(m, data, config, rewind_step=k, loss=loss, val=val)))

    prune_scheduled(model, method, target, data, schedule=schedule, scope=scope, compensate=False,
                    train_between=train_level, on_step=lambda m, s, r: reports.append(r), names=pool, **options)
    train_level(model)  # the last level: prune_scheduled leaves the training after it to the caller
    return result


def lottery_tickets(
    models: Sequence[nn.Module],
    data,
    config: TrainConfig | list[TrainConfig],
    *,
    target: float,
    fraction: float = 0.2,
    rewind_step: int = 0,
    scope: str = "global",
    exclude: Sequence[str] = (),
    method: str = "magnitude",
    loss: str | None = None,
    val=None,
    max_members: int | None = None,
    on_level: Callable[[int, nn.Module, LotteryLevel], object] | None = None,
    **options,
) -> list[LotteryResult]:
    """:func:`lottery_ticket` for many models at once: each level's trainings are one
    :func:`sciprune.ensemble.fit_many` call (at most ``max_members`` at once), each member pruned by its
    own scores (its own mask trajectory), scored on its own data. ``data`` / ``val``: shared or one per
    model; ``config``: one, or one per model differing only in ``seed``. Member i's result equals
    ``lottery_ticket(models[i], data[i], config[i], ...)`` to float rounding (1e-10 in float64, tested).
    ``on_level(i, model, level)`` after each level's training of member i."""
    models = list(models)
    M = len(models)
    if M == 0:
        raise SciPruneError("models must be a non-empty list of modules, got an empty list")
    if len({id(m) for m in models}) != M:
        raise SciPruneError("every member must be a distinct module; the same module was passed twice")
    datas = data if isinstance(data, list) else [data] * M
    cfgs = config if isinstance(config, list) else [config] * M
    vals = val if isinstance(val, list) else [val] * M
    for what, xs in (("data", datas), ("config", cfgs), ("val", vals)):
        if len(xs) != M:
            raise SciPruneError(f"{what} must be one shared value or a list with one per model; got {len(xs)} for {M}")
    check_shared_config(cfgs)
    checked = [_check(m, d, c, target=target, fraction=fraction, rewind_step=rewind_step, scope=scope,
                      exclude=exclude, method=method, options=options) for m, d, c in zip(models, datas, cfgs)]
    if on_level is not None and not callable(on_level):
        raise SciPruneError(f"on_level must be a function (index, model, level), got {on_level!r}")
    k = checked[0][2]
    results = [LotteryResult(rewind_step=k, pool=c[1]) for c in checked]
    targets = []
    for (schedule, pool, _), m in zip(checked, models):
        params = dict(m.named_parameters())
        total = sum(params[n].numel() for n in pool) if scope == "global" else None
        targets.append(schedule.targets(target, total=total))

    def record(idx: list[int], hists: list[History], reports: list[PruneReport | None]) -> None:
        for i, h, r in zip(idx, hists, reports):
            level = LotteryLevel(len(results[i].levels), 0.0 if r is None else float(r.achieved), r, h)
            results[i].levels.append(level)
            if on_level is not None:
                on_level(i, models[i], level)

    hook = Rewind(k) if k else None
    stored = [snapshot(m) for m in models] if k == 0 else None
    hists = fit_many(models, data, cfgs, loss=loss, val=val, max_members=max_members,
                     hooks=[hook] if hook else None)
    for i in range(M):
        results[i].rewind_state = stored[i] if hook is None else hook.at(i)
    record(list(range(M)), hists, [None] * M)
    for level in range(max(len(t) for t in targets)):
        idx = [i for i in range(M) if level < len(targets[i])]
        reports = []
        for i in idx:  # the step of prune_scheduled: re-score the trained member, prune to the level
            p = plan(models[i], method, datas[i], compensate=False, names=results[i].pool, **options)
            reports.append(apply_plan(models[i], p, targets[i][level], scope=scope))
            rewind(models[i], results[i].rewind_state)
        hists = retrain_many([models[i] for i in idx], _sub(data, idx), [cfgs[i] for i in idx], rewind_step=k,
                             loss=loss, val=_sub(val, idx), max_members=max_members)
        record(idx, hists, reports)
    return results


def _sub(x, idx):
    """A per-model list restricted to ``idx``; a shared value as it is."""
    return [x[i] for i in idx] if isinstance(x, list) else x
