"""The sweep store: ``<output>/sweep/``, one small JSON file per finished run, keyed by run key.

Layout::

    sweep/runs/<key>.json     the numbers of one run (metrics, sparsity, weight count) and its coordinates
    sweep/models/<key>.pt     the state_dict of each trained dense network (key of its dense run)

Why one JSON file per run: a run is the unit that resumes, so a file per run makes "is it done?" a
directory listing and makes every write independent (temp file + fsync + ``os.replace``: a file is
either complete or absent; a crash leaves at worst a ``.*.tmp``, deleted by the next sweep that takes
the output folder's lock, :mod:`sciprune.study_lock`). No database and no append-only log to repair;
the client process holding that lock is the only writer (Dask workers return results, they never
write). Every record is checked when read: a file of the wrong shape (valid JSON missing keys or with
values of the wrong type, or not JSON at all) or a weights file that does not load as the state_dict
of the run's architecture is reported as damaged and its run computed again, never trusted. JSON writes
floats with ``repr``, so a float64 read back is bit-for-bit the one computed. The metrics of a run are
a few hundred bytes; a GPU-scale study (~10^4 runs) is ~10^4 files, which any file system lists in
milliseconds. Dense weights go beside them (``torch.save`` of the state_dict, also atomic) so that
pruning runs resumed later start from the same dense network instead of retraining it.
:meth:`SweepStore.combine` gathers the runs of a grid into the ``sciprune run`` results layout.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..outputs import child
from ..study_records import (STAGES, diagnostic_variables, diagnostics_problem, line_variables, lines_problem,
                             prune_variables, steps_problem)
from ..results import write_bytes_atomic
from ._grid import Run

__all__ = ["SweepStore", "DamagedRecord", "record_problem"]


class DamagedRecord(Exception):
    """A stored file of the sweep that cannot be used; ``str()`` is the one-line report."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: damaged ({why}); recomputing")
        self.path, self.why = path, why


_KINDS = {"dense": ("metrics", "weights"), "scratch": ("metrics", "weights"), "prune": ("pruned", "finetuned", "sparsity")}


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _metrics_problem(d: object, name: str, metrics: Sequence[str] | None) -> str | None:
    if not isinstance(d, dict) or not all(isinstance(k, str) and _number(v) for k, v in d.items()):
        return f"'{name}' is not an object of numbers"
    missing = [m for m in (metrics or ()) if m not in d]
    return f"'{name}' lacks the metric {missing[0]!r}" if missing else None


def record_problem(rec: object, stem: str, metrics: Sequence[str] | None = None) -> str | None:
    """What is wrong with a run record read from ``<stem>.json``, or None if it is well formed."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    if rec.get("key") != stem:
        return f"its 'key' is {rec.get('key')!r}, not the file name {stem!r}"
    kind = rec.get("kind")
    if kind not in _KINDS:
        return f"'kind' is {kind!r}, expected one of {sorted(_KINDS)}"
    for name in ("settings", "data_sha256"):
        if name in rec and not isinstance(rec[name], str):
            return f"'{name}' is not a string"
    for name in _KINDS[kind]:
        if name not in rec:
            return f"the key {name!r} of a {kind} run is missing"
        if name in ("metrics", "pruned", "finetuned"):
            problem = _metrics_problem(rec[name], name, metrics)
            if problem:
                return problem
        elif not _number(rec[name]):
            return f"'{name}' is {rec[name]!r}, expected a number"
    if "diagnostics" in rec:
        problem = diagnostics_problem(rec["diagnostics"])
        if problem:
            return problem
    if kind == "prune" and "lines" in rec:
        problem = lines_problem(rec["lines"])
        if problem:
            return problem
    if kind == "prune" and "steps" in rec:
        problem = steps_problem(rec["steps"], metrics)
        if problem:
            return problem
    if kind != "prune" and not (math.isfinite(rec["weights"]) and rec["weights"] >= 0):
        return f"'weights' is {rec['weights']!r}, expected a count"
    return None



class SweepStore:
    """Finished runs of sweeps under ``root`` (normally ``<output>/sweep``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.models_dir = self.root / "models"

    def scan(self, metrics: Sequence[str] | None = None) -> tuple[dict[str, dict], dict[Path, str]]:
        """Every stored run by key, and the damaged run files with what is wrong with each.

        ``metrics``: the metric names every record must hold (those of the case's task); a record
        lacking one, or of another shape, is damaged. Temporary files are left alone (see
        :func:`sciprune.study_lock.remove_orphans`).
        """
        out: dict[str, dict] = {}
        damaged: dict[Path, str] = {}
        if not self.runs_dir.is_dir():
            return out, damaged
        for path in self.runs_dir.glob("*.json"):
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError) as err:
                damaged[path] = f"not readable JSON: {type(err).__name__}"
                continue
            problem = record_problem(rec, path.stem, metrics)
            if problem is not None:
                damaged[path] = problem
            else:
                out[path.stem] = rec
        return out, damaged

    def put(self, run: Run, record: dict, *, data_sha256: str) -> None:
        """Store the numbers of ``run`` (computed from data of hash ``data_sha256``) atomically."""
        rec = {"key": run.key, "settings": run.settings, "data_sha256": data_sha256, "kind": run.kind,
               "arch": run.arch, "noise": run.noise, "seed": run.seed, "method": run.label, "ratio": run.ratio,
               **record}
        write_bytes_atomic(self.run_path(run.key), json.dumps(rec).encode())

    def run_path(self, key: str) -> Path:
        return child(self.runs_dir, f"{key}.json")

    def model_path(self, dense_key: str) -> Path:
        return child(self.models_dir, f"{dense_key}.pt")

    def has_model(self, dense_key: str) -> bool:
        return self.model_path(dense_key).is_file()

    def save_model(self, dense_key: str, state: dict[str, torch.Tensor]) -> None:
        """The dense network's state_dict, atomically."""
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
        write_bytes_atomic(self.model_path(dense_key), buf.getbuffer())

    def load_model(self, dense_key: str,
                   expected: Callable[[dict], dict[str, tuple]] | None = None) -> dict[str, torch.Tensor]:
        """The stored state_dict of a dense network; a :class:`DamagedRecord` if it does not load as a
        dict of floating-point tensors or, with ``expected`` (state -> {name: shape} of the network it
        should be), has other names or shapes."""
        path = self.model_path(dense_key)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # garbage, truncated or foreign: never trusted
            raise DamagedRecord(path, f"not a saved state_dict: {type(err).__name__}") from None
        if not (isinstance(state, dict) and state and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                           for k, v in state.items())):
            raise DamagedRecord(path, "not a dict of named tensors")
        if expected is not None:
            got, want = {k: tuple(v.shape) for k, v in state.items()}, expected(state)
            if got != want:
                diff = sorted(set(got.items()) ^ set(want.items()))[:1]
                raise DamagedRecord(path, f"parameters do not match the architecture (first difference: {diff})")
        if not all(v.is_floating_point() for v in state.values()):
            raise DamagedRecord(path, "parameters are not floating point")
        return state

    def combine(self, case, runs: list[Run], records: dict[str, dict]) -> xr.Dataset:
        """The runs of a grid as one Dataset in the layout of ``sciprune run`` (no attributes)."""
        missing = [r for r in runs if r.key not in records]
        if missing:
            from ..errors import SciPruneError

            raise SciPruneError(f"{len(missing)} runs of the sweep are not stored yet (first: {missing[0]}); "
                                "run the sweep again to finish them")
        archs = list(dict.fromkeys(r.arch for r in runs))
        levels = list(dict.fromkeys(r.noise for r in runs))
        seeds = list(dict.fromkeys(r.seed for r in runs))
        labels = [v[0] for v in case.prune.variants]
        ratios = list(case.prune.ratios)
        lead = (len(archs), len(levels), len(seeds))
        ia = lambda r: (archs.index(r.arch), levels.index(r.noise), seeds.index(r.seed))  # noqa: E731
        dense = [r for r in runs if r.kind == "dense"]
        metrics = list(records[dense[0].key]["metrics"])
        d_res = {m: np.full(lead, np.nan) for m in metrics}
        d_w = np.zeros(lead, dtype=np.int64)
        s_res = {m: np.full(lead + (len(ratios),), np.nan) for m in metrics}
        s_w = np.full(lead + (len(ratios),), np.nan)
        for r in runs:
            rec, i = records[r.key], ia(r)
            if r.kind == "dense":
                for m in metrics:
                    d_res[m][i] = rec["metrics"][m]
                d_w[i] = rec["weights"]
            elif r.kind == "scratch":
                k = (ratios.index(r.ratio),)
                for m in metrics:
                    s_res[m][i + k] = rec["metrics"][m]
                s_w[i + k] = rec["weights"]
        dims = ("arch", "noise", "seed")
        data, step_coords = prune_variables(
            metrics, dims, lead, labels, ratios,
            [(ia(r), r.label, r.ratio, records[r.key]) for r in runs if r.kind == "prune"],
            keeps_steps=case.prune.keep_steps != "last")
        diag, diag_coords = diagnostic_variables(
            dims, lead, labels, ratios, [(ia(r), r.label, r.ratio, records[r.key]) for r in runs if r.kind == "prune"],
            [(ia(r), records[r.key]) for r in dense])
        data.update(diag)
        pairs, lines = case.diagnostics.pairs, []
        for r in runs:
            for a, line in (records[r.key].get("lines") or {}).items() if r.kind == "prune" else ():
                if (a, r.label) in pairs:
                    lines.append((ia(r), a, r.label, r.ratio, line))
        line_data, line_coords = line_variables(dims, lead, pairs, ratios, case.diagnostics.line_points, lines)
        data.update(line_data)
        data.update({f"dense_{m}": (dims, v) for m, v in d_res.items()})
        data["dense_weights"] = (dims, d_w)
        if case.baseline.scratch:
            data.update({f"scratch_{m}": (dims + ("ratio",), v) for m, v in s_res.items()})
            data["scratch_weights"] = (dims + ("ratio",), s_w)
        coords = {"arch": archs, "noise": levels, "seed": seeds, "method": labels, "ratio": ratios, "stage": list(STAGES),
                  **step_coords, **diag_coords, **line_coords}
        return xr.Dataset(data, coords=coords)
