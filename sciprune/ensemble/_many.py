"""Train any list of models with the ensemble engine, grouped by architecture, config and data shape."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from torch import nn

from ..data._types import TaskData
from ..errors import SciPruneError
from ..hooks import resolve_hooks
from ..training import History, TrainConfig, _resolve, fit
from ._evaluate import _per_member
from ._fit import _unsupported, fit_ensemble
from ._hooks import as_member_hooks
from ._memory import members_per_batch
from ._stack import architecture_key

__all__ = ["fit_many"]


def fit_many(
    models: Sequence[nn.Module],
    data,
    configs: TrainConfig | list[TrainConfig] | None = None,
    *,
    loss: str | None = None,
    val=None,
    max_members: int | None = None,
    forward: str = "auto",
    hooks: list | None = None,
) -> list[History]:
    """Train any list of models: batches of one architecture, config (but seed) and data shape go
    through :func:`fit_ensemble` (at most ``max_members`` at once, default :func:`members_per_batch`);
    members the ensemble cannot train (L-BFGS, early stopping, plateau) go through ``sciprune.fit``.
    Same arguments as :func:`fit_ensemble`; histories come back in the order of ``models``.
    ``hooks`` are called once per event for each batch of members trained together (``state.indices``:
    their positions in ``models``), and for each member trained by ``sciprune.fit`` with a one-member
    :class:`EnsembleFitState`; groups are trained one after another.
    """
    models = list(models)
    M = len(models)
    if M == 0:
        raise SciPruneError("models must be a non-empty list of modules, got an empty list")
    resolve_hooks(hooks)  # checks them once, before any training
    cfgs = _per_member(TrainConfig() if configs is None else configs, M, "configs", (TrainConfig,))
    datas = _per_member(data, M, "data", (tuple, TaskData))
    vals = _per_member(val, M, "val", (tuple,))
    out: list[History | None] = [None] * M
    groups: dict[tuple, list[int]] = {}
    for i, (m, c, d) in enumerate(zip(models, cfgs, datas)):
        if _unsupported(c) is not None:
            out[i] = fit(m, d, c, loss=loss, val=vals[i], hooks=as_member_hooks(hooks, i))
            continue
        X = _resolve(d, vals[i])[0]
        key = (architecture_key(m), replace(c, seed=0), tuple(X.shape))
        groups.setdefault(key, []).append(i)
    for idx in groups.values():
        cfg = cfgs[idx[0]]
        X = _resolve(datas[idx[0]], None)[0]
        per = max_members or members_per_batch(models[idx[0]], int(X.shape[0]), cfg.batch_size,
                                               optimizer=cfg.optimizer)
        for s in range(0, len(idx), per):
            part = idx[s : s + per]
            hs = fit_ensemble([models[i] for i in part], [datas[i] for i in part], [cfgs[i] for i in part],
                              loss=loss, val=[vals[i] for i in part] if val is not None else None,
                              forward=forward, hooks=hooks, member_ids=part)
            for i, h in zip(part, hs):
                out[i] = h
    return out  # type: ignore[return-value]
