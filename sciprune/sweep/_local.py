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
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..config import Case
from ..fingerprint import Fingerprint, check_unchanged
from ..study import CLASSIFICATION_METRICS, REGRESSION_METRICS, check_case, held_study, rewind_hooks, study_attrs
from ..results import write_dataset
from ._grid import Run, build_grid
from ._store import DamagedRecord, SweepStore
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
    wait: bool = False,
) -> Path:
    """Run every pending run of ``case``, store each as it finishes, write ``<output>/results.nc``.

    Finished runs (found in ``<output>/sweep/`` by key: settings and data content hash) are skipped,
    and stored dense networks are loaded instead of retrained; runs whose data changed and damaged
    records are recomputed, and the output says which and why. ``engine``: :class:`LocalEngine`
    (default) or a :class:`~sciprune.sweep.DaskEngine`. ``max_members``: most models per ensemble
    (default from :func:`sciprune.ensemble.members_per_batch`). ``wait``: wait for another process
    holding the output folder instead of refusing (:mod:`sciprune.study_lock`). Returns the path of
    ``results.nc``.
    """
    local = engine is None
    check_case(case, local=local)
    with held_study(case, command="sweep", wait=wait, echo=echo) as (out, data):
        return _sweep(case, case_path, out, data, engine or LocalEngine(), local=local, max_members=max_members,
                      echo=echo, show_progress=show_progress)


def _stored_runs(case: Case, runs: list[Run], store: SweepStore, data: Fingerprint,
                 echo: Callable[[str], None]) -> dict[str, dict]:
    """The stored records of ``runs``; damaged ones and those of changed data are reported (one line
    each damaged file, one line per reason for the others) and left out, so they are recomputed."""
    metrics = REGRESSION_METRICS if case.data.kind == "pdebench" else CLASSIFICATION_METRICS
    records, damaged = store.scan(metrics)
    wanted = {r.key: r for r in runs}
    for path, why in sorted(damaged.items()):
        if path.stem in wanted:
            echo(f"{path}: damaged ({why}); recomputing")
    for key, rec in list(records.items()):
        if key in wanted and rec["kind"] != wanted[key].kind:
            echo(f"{store.run_path(key)}: damaged (a {rec['kind']} record where a {wanted[key].kind} run is "
                 "expected); recomputing")
            del records[key]
    by_settings: dict[str, set] = {}
    for rec in records.values():
        by_settings.setdefault(rec.get("settings", rec["key"]), set()).add(rec.get("data_sha256"))
    reasons: dict[str, Counter] = {}
    for r in runs:
        olds = by_settings.get(r.settings, set()) - {data.sha256}
        if r.key in records or not olds:
            continue
        if None in olds:
            why = "stored without a data hash (by an older sciprune)"
        else:
            why = f"data {data.label} changed (sha256 {', '.join(sorted(o[:12] for o in olds))}.. -> {data.short()}..)"
        reasons.setdefault(why, Counter())[r.kind] += 1
    for why, counts in reasons.items():
        kinds = ", ".join(f"{n} {k}" for k, n in counts.items())
        echo(f"recomputing {sum(counts.values())} runs ({kinds}): {why}")
    return {k: v for k, v in records.items() if k in wanted}


def _snapshot_key(dense_key: str, step: int) -> str:
    """Where the dense training's weights after optimiser step ``step`` are stored (for rewinding)."""
    return f"{dense_key}-step{step}"


def _dense_state(case: Case, store: SweepStore, run: Run, echo: Callable[[str], None]):
    """The stored dense network of ``run`` and its snapshots at the case's rewinding steps:
    ``(state_dict, {k: state_dict})``, or None if any is absent or damaged (reported): the dense
    network is then trained again (deterministically, the same network) and its snapshots kept."""
    keys = [run.key] + [_snapshot_key(run.key, k) for k in rewind_hooks(case)]
    if not all(store.has_model(k) for k in keys):
        return None
    try:
        states = [store.load_model(k, expected=lambda state: _expected_shapes(case, run.arch, state)) for k in keys]
    except DamagedRecord as err:
        echo(str(err))
        return None
    return states[0], dict(zip(rewind_hooks(case), states[1:]))


def _expected_shapes(case: Case, arch: str, state: dict) -> dict[str, tuple]:
    """Parameter names and shapes of ``arch`` for the input and output sizes ``state`` claims."""
    import torch

    from ..study import make_model

    weights = [v for v in state.values() if v.ndim == 2]
    if not weights:
        return {}
    in_f, out_f = int(weights[0].shape[1]), int(weights[-1].shape[0])
    with torch.device("meta"):
        model = make_model(case.models[arch], in_f, out_f, 0, device="meta", dtype=torch.float32)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _sweep(case: Case, case_path: str | None, out: Path, data: Fingerprint, engine: Engine, *, local: bool,
           max_members: int | None, echo: Callable[[str], None], show_progress: bool) -> Path:
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    runs = build_grid(case, data_sha256=data.sha256)
    store = SweepStore(out / "sweep")
    records = _stored_runs(case, runs, store, data, echo)
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

    def prune_batch(block: tuple, state, snapshots: dict) -> None:
        todo = [r for r in blocks[block]["prune"] if r.key not in records]
        # a loss line is stored with the second network of its pair, computed from both: a first network
        # already stored is trained again (deterministically) in the same job, its record not rewritten
        firsts = {(a, r.ratio) for r in todo for a, b in case.diagnostics.pairs if b == r.label}
        extra = [r for r in blocks[block]["prune"] if r.key in records and (r.label, r.ratio) in firsts]
        if todo and block not in submitted:
            submitted.add(block)
            arch, level, seed = block
            engine.submit(Job(prune_job, (case, arch, level, seed, state,
                                          [(r.label, r.method, r.compensate, r.ratio) for r in todo + extra]),
                              dict(kw, snapshots=snapshots), todo, f"{arch} noise={level:g} seed={seed} prune x{len(todo)}"))

    for arch in case.models:
        dense_runs, states = [], []
        scratch = []
        for block, parts in blocks.items():
            if block[0] != arch:
                continue
            d = parts["dense"][0]
            pending = any(r.key not in records for r in parts["prune"])
            stored = _dense_state(case, store, d, echo) if (pending or d.key not in records) else None
            state = None if stored is None else stored[0]
            if d.key not in records or (pending and state is None):
                dense_runs.append(d)
                states.append(state)
            if pending and stored is not None:
                prune_batch(block, *stored)
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
                    for step, snap in res["snapshots"].items():
                        store.save_model(_snapshot_key(run.key, step), snap)
                snaps = res["snapshots"]
                res = {"metrics": res["metrics"], "weights": res["weights"], "diagnostics": res["diagnostics"]}
            fresh = run.key not in records
            store.put(run, res, data_sha256=data.sha256)
            records[run.key] = res
            if fresh:
                bar.update(1)
            if job.fn is dense_job and job.extra[k] is False:  # trained here: its snapshots came back with it
                prune_batch(run.block, results[k]["state"], snaps)
    bar.close()
    check_unchanged(data)

    ds = store.combine(case, runs, records)
    ds.attrs.update(study_attrs(case, case_path, wall_time_s=time.perf_counter() - t0, device=case.device, data=data),
                    engine="sweep (local)" if local else "sweep (dask)")
    return write_dataset(ds, out / "results.nc")
