"""The computations of a sweep, as plain functions of picklable arguments that return plain results.

The local engine calls them in-process; the Dask engine ships the same calls to workers. They never
touch the store: the caller writes what they return. Each trains its models as ensembles with
:func:`sciprune.ensemble.fit_many`, which equals :func:`sciprune.fit` member by member, so a sweep
gives the numbers of ``sciprune run`` up to float rounding.
"""

from __future__ import annotations

import copy

import torch

from ..config import Case, ModelSpec
from ..ensemble import fit_many
from ..models import describe, n_weights, scaled_widths
from ..pipeline import evaluate, make_model, resolve_device, train_config
from ..pruning import Planner, apply_plan
from ..tasks import LoadedTask, build_task

__all__ = ["dense_job", "prune_job", "scratch_job"]

State = dict[str, torch.Tensor]


def _task(case: Case, level: float, seed: int, device, dtype) -> LoadedTask:
    return build_task(case.data, noise_kind=case.noise.kind, noise_level=level, seed=seed, dtype=dtype).to(device, dtype)


def _setup(case: Case, device: str | None):
    return resolve_device(device or case.device), getattr(torch, case.dtype)


def _weights(model) -> int:
    return int(sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight")))


def dense_job(case: Case, arch: str, members: list[tuple[float, int, State | None]], *,
              device: str | None = None, max_members: int | None = None) -> list[dict]:
    """Train the dense networks of ``arch`` for ``members`` = [(noise, seed, state or None)] as one
    ensemble (a given state is loaded instead of trained); per member its metrics, weight count and
    state_dict (on the CPU)."""
    dev, dtype = _setup(case, device)
    spec = case.models[arch]
    tasks = [_task(case, level, seed, dev, dtype) for level, seed, _ in members]
    models = [make_model(spec, t.task.in_features, t.task.out_features, seed, device=dev, dtype=dtype)
              for t, (_, seed, _) in zip(tasks, members)]
    todo = [i for i, (_, _, state) in enumerate(members) if state is None]
    for i, (_, _, state) in enumerate(members):
        if state is not None:
            models[i].load_state_dict(state)
    if todo:
        fit_many([models[i] for i in todo], [tasks[i].task for i in todo],
                 [train_config(case.train, members[i][1]) for i in todo], max_members=max_members)
    return [{"metrics": evaluate(m, t), "weights": _weights(m),
             "state": {k: v.detach().cpu() for k, v in m.state_dict().items()}}
            for m, t in zip(models, tasks)]


def prune_job(case: Case, arch: str, level: float, seed: int, state: State,
              runs: list[tuple[str, str, bool | None, float]], *,
              device: str | None = None, max_members: int | None = None) -> list[dict]:
    """Prune copies of one dense network for ``runs`` = [(label, method, compensate, ratio)], evaluate
    them ("pruned"), fine-tune them all as one ensemble on the shared task, evaluate ("finetuned").

    Each method scores the dense network once and its variants share the scores
    (:class:`sciprune.pruning.Planner`, as in ``sciprune run``).
    """
    dev, dtype = _setup(case, device)
    loaded = _task(case, level, seed, dev, dtype)
    task = loaded.task
    dense = make_model(case.models[arch], task.in_features, task.out_features, seed, device=dev, dtype=dtype)
    dense.load_state_dict(state)
    planner = Planner(dense, task, seed=seed, options=case.prune.options)
    copies, out = [], []
    for label, method, compensate, ratio in runs:
        variant_plan = planner(method, compensate)
        model = copy.deepcopy(dense)
        report = apply_plan(model, variant_plan, ratio, scope=case.prune.scope)
        out.append({"pruned": evaluate(model, loaded), "sparsity": float(report.achieved)})
        copies.append(model)
    if copies:
        fit_many(copies, task, train_config(case.finetune, seed), max_members=max_members)
    for model, rec in zip(copies, out):
        rec["finetuned"] = evaluate(model, loaded)
    return out


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
            cache[(level, seed)] = _task(case, level, seed, dev, dtype)
        t = cache[(level, seed)].task
        arch_d = describe(make_model(spec, t.in_features, t.out_features, seed, device="cpu", dtype=dtype))
        base_widths, total = arch_d["sizes"][1:-1], n_weights(arch_d["sizes"])
        widths = scaled_widths(t.in_features, base_widths, t.out_features, round((1 - ratio) * total))
        small = ModelSpec(kind="mlp", widths=widths, activation=arch_d["activation"])
        models.append(make_model(small, t.in_features, t.out_features, seed, device=dev, dtype=dtype))
        tasks.append(cache[(level, seed)])
        configs.append(train_config(case.train, seed))
        sizes.append(n_weights([t.in_features, *widths, t.out_features]))
    if models:
        fit_many(models, [t.task for t in tasks], configs, max_members=max_members)
    return [{"metrics": evaluate(m, t), "weights": w} for m, t, w in zip(models, tasks, sizes)]
