"""The computations of a sweep, as plain functions of picklable arguments that return plain results.

The local engine calls them in-process; the Dask engine ships the same calls to workers. They never
touch the store: the caller writes what they return. Each trains its models as ensembles with
:func:`sciprune.ensemble.fit_many`, which equals :func:`sciprune.fit` member by member, so a sweep
gives the numbers of ``sciprune run`` up to float rounding.
"""

from __future__ import annotations


import torch

from ..config import Case
from ..devices import resolve_device
from ..ensemble import fit_many
from ..study import (
    check_training_lengths,
    evaluate,
    load_task,
    make_model,
    rewind_hooks,
    scratch_spec,
    study_diagnostics,
    study_lines,
    train_config,
    weight_count,
)
from ..engine import Variant, ensemble_trainer, prune_and_train
from ..planner import Planner
from ..tasks import LoadedTask

__all__ = ["dense_job", "prune_job", "scratch_job"]

State = dict[str, torch.Tensor]


def _setup(case: Case, device: str | None):
    return resolve_device(device or case.device), getattr(torch, case.dtype)


def dense_job(case: Case, arch: str, members: list[tuple[float, int, State | None]], *,
              device: str | None = None, max_members: int | None = None) -> list[dict]:
    """Train the dense networks of ``arch`` for ``members`` = [(noise, seed, state or None)] as one
    ensemble (a given state is loaded instead of trained); per member its metrics, weight count and
    state_dict (on the CPU)."""
    dev, dtype = _setup(case, device)
    spec = case.models[arch]
    tasks = [load_task(case, level, seed, device=dev, dtype=dtype) for level, seed, _ in members]
    for t in tasks:  # before any training
        check_training_lengths(case, int(t.task.X_train.shape[0]))
    models = [make_model(spec, t.task.in_features, t.task.out_features, seed, device=dev, dtype=dtype)
              for t, (_, seed, _) in zip(tasks, members)]
    todo = [i for i, (_, _, state) in enumerate(members) if state is None]
    for i, (_, _, state) in enumerate(members):
        if state is not None:
            models[i].load_state_dict(state)
    rewinds = rewind_hooks(case)  # the dense weights at each step a procedure rewinds to
    if todo:
        fit_many([models[i] for i in todo], [tasks[i].task for i in todo],
                 [train_config(case.train, members[i][1]) for i in todo], max_members=max_members,
                 hooks=list(rewinds.values()) or None)
    out = [{"metrics": evaluate(m, t), "weights": weight_count(m), "state": _cpu(m.state_dict()), "snapshots": {},
            "diagnostics": study_diagnostics(case, m, t.task, seed)} for m, t, (_, seed, _) in zip(models, tasks, members)]
    for j, i in enumerate(todo):
        out[i]["snapshots"] = {k: _cpu(h.at(j)) for k, h in rewinds.items()}
    return out


def _cpu(state: State) -> State:
    return {k: v.detach().cpu() for k, v in state.items()}


def prune_job(case: Case, arch: str, level: float, seed: int, state: State,
              runs: list[tuple[str, str, bool | None, float]], *, snapshots: dict[int, State] | None = None,
              device: str | None = None, max_members: int | None = None) -> list[dict]:
    """Prune copies of one dense network for ``runs`` = [(label, method, compensate, ratio)] under the
    case's schedule and fine-tune them, every training of a round as one ensemble
    (:func:`sciprune.engine.prune_and_train` with :func:`~sciprune.engine.ensemble_trainer`, the
    procedure of ``sciprune run``); per run its record (:meth:`~sciprune.engine.Outcome.record`).

    Each method scores the dense network once and its variants share the scores
    (:class:`sciprune.planner.Planner`, as in ``sciprune run``). ``snapshots``: step k -> the dense
    training's weights after step k, for the procedures that rewind there.
    """
    dev, dtype = _setup(case, device)
    loaded = load_task(case, level, seed, device=dev, dtype=dtype)
    task = loaded.task
    dense = make_model(case.models[arch], task.in_features, task.out_features, seed, device=dev, dtype=dtype)
    dense.load_state_dict(state)
    planner = Planner(dense, task, seed=seed, options=case.prune.options)
    spec = case.models[arch]
    outcomes = prune_and_train(planner, [Variant(*r, case.prune.procedure(r[0])) for r in runs],
                               schedule=case.prune.schedule, scope=case.prune.scope,
                               finetune=train_config(case.finetune, seed),
                               train=ensemble_trainer(task, max_members=max_members),
                               evaluate=lambda m: evaluate(m, loaded), keep=case.prune.keep_steps,
                               train_config=train_config(case.train, seed),
                               init=lambda: make_model(spec, task.in_features, task.out_features, seed, device=dev,
                                                       dtype=dtype),
                               snapshots={k: {n: v.to(dev) for n, v in st.items()} for k, st in (snapshots or {}).items()})
    lines = study_lines(case, outcomes, task)  # stored with the second network of each pair
    return [dict(o.record(case.prune.keep_steps), diagnostics=study_diagnostics(case, o.model, task, seed),
                 **({"lines": {a: line for (a, b, r), line in lines.items()
                               if (b, r) == (o.variant.label, o.variant.ratio)}} if case.diagnostics.lines else {}))
            for o in outcomes]


def scratch_job(case: Case, arch: str, members: list[tuple[float, int, float]], *,
                device: str | None = None, max_members: int | None = None) -> list[dict]:
    """Dense networks with as many weights as the pruned ones keep, trained from scratch, for
    ``members`` = [(noise, seed, ratio)]; :func:`fit_many` groups them by widths into ensembles."""
    dev, dtype = _setup(case, device)
    spec = case.models[arch]
    cache: dict[tuple[float, int], LoadedTask] = {}
    models, tasks, configs, sizes = [], [], [], []
    for level, seed, ratio in members:
        if (level, seed) not in cache:
            cache[(level, seed)] = load_task(case, level, seed, device=dev, dtype=dtype)
        t = cache[(level, seed)].task
        dense = make_model(spec, t.in_features, t.out_features, seed, device="cpu", dtype=dtype)
        small, size = scratch_spec(dense, t.in_features, t.out_features, ratio)
        models.append(make_model(small, t.in_features, t.out_features, seed, device=dev, dtype=dtype))
        tasks.append(cache[(level, seed)])
        configs.append(train_config(case.train, seed))
        sizes.append(size)
    if models:
        fit_many(models, [t.task for t in tasks], configs, max_members=max_members)
    return [{"metrics": evaluate(m, t), "weights": w} for m, t, w in zip(models, tasks, sizes)]
