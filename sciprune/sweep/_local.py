"""The sweep driver: plan the pending runs, hand batches to an engine, store what comes back.

Work is cut into batches that are ensembles: per architecture one batch trains every pending dense
network (noise levels x seeds) and one trains every pending scratch baseline; per dense network one
batch prunes copies at every pending (variant, ratio) and fine-tunes them together. Pruning batches
are submitted as soon as their dense network is stored. The engine runs batches in this process
(:class:`LocalEngine`) or on a Dask cluster (:class:`sciprune.sweep.DaskEngine`); in both cases only
this process writes the store, one run at a time as batches finish.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Case
from ..results import write_dataset
from ..tasks import ensure_data
from ._grid import Run, build_grid, check_case
from ._store import SweepStore
from ._work import dense_job, prune_job, scratch_job

__all__ = ["run_sweep", "Job", "Engine", "LocalEngine"]


@dataclass
class Job:
    """One batch: ``fn(*args, **kwargs)`` and the runs (with extra bookkeeping) it produces."""

    fn: Callable
    args: tuple
    kwargs: dict
    runs: list[Run]
    label: str
    extra: Any = None


class Engine(Protocol):
    def submit(self, job: Job) -> None: ...
    def completed(self) -> Iterator[tuple[Job, Any]]: ...


class LocalEngine:
    """Runs batches one after another in this process, in submission order."""

    def __init__(self) -> None:
        self._queue: deque[Job] = deque()
        self.on_start: Callable[[Job], None] | None = None  # e.g. show the batch in the progress bar

    def submit(self, job: Job) -> None:
        self._queue.append(job)

    def completed(self) -> Iterator[tuple[Job, Any]]:
        while self._queue:
            job = self._queue.popleft()
            if self.on_start is not None:
                self.on_start(job)
            yield job, job.fn(*job.args, **job.kwargs)


def run_sweep(
    case: Case,
    *,
    case_path: str | None = None,
    engine: Engine | None = None,
    max_members: int | None = None,
    echo: Callable[[str], None] = print,
    show_progress: bool = True,
) -> Path:
    """Run every pending run of ``case``, store each as it finishes, write ``<output>/results.nc``.

    Finished runs (found in ``<output>/sweep/`` by key) are skipped, and stored dense networks are
    loaded instead of retrained. ``engine``: :class:`LocalEngine` (default) or a
    :class:`~sciprune.sweep.DaskEngine`. ``max_members``: most models per ensemble (default from
    :func:`sciprune.ensemble.members_per_batch`). Returns the path of ``results.nc``.
    """
    from tqdm.auto import tqdm

    local = engine is None
    check_case(case, local=local)
    engine = engine or LocalEngine()
    out = Path(case.output)
    out.mkdir(parents=True, exist_ok=True)
    if ensure_data(case.data):
        echo(f"generated {case.data.file}")
    t0 = time.perf_counter()
    runs = build_grid(case)
    store = SweepStore(out / "sweep")
    records = store.scan()
    done = sum(r.key in records for r in runs)
    echo(f"{case.name}: {len(runs)} runs, {done} runs already done, {len(runs) - done} to run")
    bar = tqdm(total=len(runs), initial=done, desc=case.name, unit="run", disable=not show_progress,
               dynamic_ncols=True)
    if isinstance(engine, LocalEngine):
        engine.on_start = lambda job: bar.set_postfix_str(job.label)
    device = None if local else case.device
    kw = {"device": device, "max_members": max_members}

    blocks: dict[tuple, dict[str, list[Run]]] = {}
    for r in runs:
        blocks.setdefault(r.block, {"dense": [], "prune": [], "scratch": []})[r.kind].append(r)

    submitted: set[tuple] = set()

    def prune_batch(block: tuple, state) -> None:
        todo = [r for r in blocks[block]["prune"] if r.key not in records]
        if todo and block not in submitted:
            submitted.add(block)
            arch, level, seed = block
            engine.submit(Job(prune_job, (case, arch, level, seed, state,
                                          [(r.label, r.method, r.compensate, r.ratio) for r in todo]), kw, todo,
                              f"{arch} noise={level:g} seed={seed} prune x{len(todo)}"))

    for arch in case.models:
        dense_runs, states = [], []
        scratch = []
        for block, parts in blocks.items():
            if block[0] != arch:
                continue
            d = parts["dense"][0]
            pending = any(r.key not in records for r in parts["prune"])
            has_model = store.has_model(d.key)
            if d.key not in records or (pending and not has_model):
                dense_runs.append(d)
                states.append(store.load_model(d.key) if has_model else None)
            if pending and has_model:
                prune_batch(block, store.load_model(d.key))
            scratch += [r for r in parts["scratch"] if r.key not in records]
        if dense_runs:
            members = [(r.noise, r.seed, s) for r, s in zip(dense_runs, states)]
            engine.submit(Job(dense_job, (case, arch, members), kw, dense_runs, f"{arch} dense x{len(members)}",
                              extra=[s is not None for s in states]))
        if scratch:
            engine.submit(Job(scratch_job, (case, arch, [(r.noise, r.seed, r.ratio) for r in scratch]), kw, scratch,
                              f"{arch} scratch x{len(scratch)}"))

    for job, results in engine.completed():
        if not isinstance(engine, LocalEngine):
            bar.set_postfix_str(f"done: {job.label}", refresh=False)
        for k, (run, res) in enumerate(zip(job.runs, results)):
            if job.fn is dense_job:
                if not job.extra[k]:
                    store.save_model(run.key, res["state"])
                res = {"metrics": res["metrics"], "weights": res["weights"]}
            fresh = run.key not in records
            store.put(run, res)
            records[run.key] = res
            if fresh:
                bar.update(1)
            if job.fn is dense_job:
                given = job.args[2][k][2]
                prune_batch(run.block, given if given is not None else results[k]["state"])
    bar.close()

    ds = store.combine(case, runs, records)
    from ..pipeline import study_attrs

    ds.attrs.update(study_attrs(case, case_path, wall_time_s=time.perf_counter() - t0, device=case.device),
                    engine="sweep (local)" if local else "sweep (dask)")
    return write_dataset(ds, out / "results.nc")
