"""The sweep store: ``<output>/sweep/``, one small JSON file per finished run, keyed by run key.

Layout::

    sweep/runs/<key>.json     the numbers of one run (metrics, sparsity, weight count) and its coordinates
    sweep/models/<key>.pt     the state_dict of each trained dense network (key of its dense run)

Why one JSON file per run: a run is the unit that resumes, so a file per run makes "is it done?" a
directory listing and makes every write independent (temp file + fsync + ``os.replace``: a file is
either complete or absent; a crash leaves at worst a ``.*.tmp`` that the next scan deletes). No lock,
no database and no append-only log to repair; the client process is the only writer (Dask workers
return results, they never write), so there are no concurrent writers to arbitrate. JSON writes
floats with ``repr``, so a float64 read back is bit-for-bit the one computed. The metrics of a run are
a few hundred bytes; a GPU-scale study (~10^4 runs) is ~10^4 files, which any file system lists in
milliseconds. Dense weights go beside them (``torch.save`` of the state_dict, also atomic) so that
pruning runs resumed later start from the same dense network instead of retraining it.
:meth:`SweepStore.combine` gathers the runs of a grid into the ``sciprune run`` results layout.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..pipeline import STAGES
from ..results import atomic_path
from ._grid import Run

__all__ = ["SweepStore"]



class SweepStore:
    """Finished runs of sweeps under ``root`` (normally ``<output>/sweep``)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / "runs"
        self.models_dir = self.root / "models"

    def scan(self) -> dict[str, dict]:
        """Every stored run by key; leftover temporary files of an interrupted write are deleted."""
        out: dict[str, dict] = {}
        for folder in (self.runs_dir, self.models_dir):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)
        if not self.runs_dir.is_dir():
            return out
        for path in self.runs_dir.glob("*.json"):
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):  # not written by this store; treat as not done
                continue
            if rec.get("key") == path.stem:
                out[path.stem] = rec
        return out

    def put(self, run: Run, record: dict) -> None:
        """Store the numbers of ``run`` atomically."""
        rec = {"key": run.key, "kind": run.kind, "arch": run.arch, "noise": run.noise, "seed": run.seed,
               "method": run.label, "ratio": run.ratio, **record}
        with atomic_path(self.runs_dir / f"{run.key}.json") as tmp:
            tmp.write_text(json.dumps(rec))

    def model_path(self, dense_key: str) -> Path:
        return self.models_dir / f"{dense_key}.pt"

    def has_model(self, dense_key: str) -> bool:
        return self.model_path(dense_key).is_file()

    def save_model(self, dense_key: str, state: dict[str, torch.Tensor]) -> None:
        """The dense network's state_dict, atomically."""
        with atomic_path(self.model_path(dense_key)) as tmp:
            torch.save({k: v.detach().cpu() for k, v in state.items()}, tmp)

    def load_model(self, dense_key: str) -> dict[str, torch.Tensor]:
        return torch.load(self.model_path(dense_key), map_location="cpu", weights_only=True)

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
        data: dict[str, tuple] = {}
        res = {m: np.full(lead + (len(labels), len(ratios), len(STAGES)), np.nan) for m in metrics}
        spars = np.full(lead + (len(labels), len(ratios)), np.nan)
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
            elif r.kind == "prune":
                j = (labels.index(r.label), ratios.index(r.ratio))
                for s, stage in enumerate(STAGES):
                    for m in metrics:
                        res[m][i + j + (s,)] = rec[stage][m]
                spars[i + j] = rec["sparsity"]
            else:
                k = (ratios.index(r.ratio),)
                for m in metrics:
                    s_res[m][i + k] = rec["metrics"][m]
                s_w[i + k] = rec["weights"]
        dims = ("arch", "noise", "seed")
        data = {m: (dims + ("method", "ratio", "stage"), v) for m, v in res.items()}
        data["sparsity"] = (dims + ("method", "ratio"), spars)
        data.update({f"dense_{m}": (dims, v) for m, v in d_res.items()})
        data["dense_weights"] = (dims, d_w)
        if case.baseline.scratch:
            data.update({f"scratch_{m}": (dims + ("ratio",), v) for m, v in s_res.items()})
            data["scratch_weights"] = (dims + ("ratio",), s_w)
        coords = {"arch": archs, "noise": levels, "seed": seeds, "method": labels, "ratio": ratios, "stage": list(STAGES)}
        return xr.Dataset(data, coords=coords)
