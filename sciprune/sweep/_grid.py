"""The runs of a sweep: one cell of (architecture, noise level, seed, variant, ratio) each.

A *run* is the smallest unit a sweep stores: the dense network of an (arch, noise, seed), one pruned
and fine-tuned copy of it for a (variant, ratio), or one scratch baseline for a ratio. Its key is a
hash of the resolved configuration that determines its numbers (data settings, noise law and level,
model, training and fine-tuning, seed, method, compensation, options, ratio, scope, dtype: its
``settings`` key) together with the content hash of the input data (:mod:`sciprune.fingerprint`),
never of the output folder, the device or the architecture's *name*: a run stored once is found again
by any sweep that would compute the same thing from the same data; a changed case or a data file
changed in place simply has new keys. Each record also stores its ``settings`` key and data hash, so
a sweep can say which runs are recomputed because their data changed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal, Optional

from ..config import Case

__all__ = ["Run", "build_grid", "run_key", "noise_levels"]

Kind = Literal["dense", "prune", "scratch"]


@dataclass(frozen=True)
class Run:
    """One stored unit of a sweep; ``label``/``method``/``compensate`` are set for ``prune`` runs only,
    ``ratio`` for ``prune`` and ``scratch`` runs. ``key`` covers the settings and the data's content
    hash; ``settings`` is the key of the settings alone (the same for any data)."""

    key: str
    kind: Kind
    arch: str
    noise: float
    seed: int
    label: Optional[str] = None
    method: Optional[str] = None
    compensate: Optional[bool] = None
    ratio: Optional[float] = None
    settings: str = ""

    @property
    def block(self) -> tuple[str, float, int]:
        """The dense model this run belongs to: (arch, noise, seed)."""
        return (self.arch, self.noise, self.seed)


def noise_levels(case: Case) -> list[float]:
    """The noise levels a case runs (classification has none), as in ``sciprune run``."""
    return list(case.noise.levels) if case.data.kind == "pdebench" else [0.0]


def _digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:24]


def _base(case: Case, arch: str, level: float, seed: int) -> dict:
    """What every run of a dense model depends on. Noise of level 0 is no noise, whatever its kind."""
    return {
        "data": case.data.model_dump(mode="json"),
        "noise": {"kind": case.noise.kind if level else "none", "level": float(level)},
        "model": case.models[arch].model_dump(mode="json"),
        "train": case.train.model_dump(mode="json"),
        "seed": int(seed),
        "dtype": case.dtype,
        **({"diagnostics": case.diagnostics.model_dump(mode="json")} if case.diagnostics.enabled else {}),
    }


def _control_of(p, label: str) -> dict:
    """What a control's numbers also depend on: the settings of the variant whose masks it takes."""
    of = p.procedures[label].of
    ref = p.procedures.get(of)
    return {"method": of, "options": p.options.get(of, {})} if ref is None else ref.model_dump(mode="json")


def _lines_of(case: Case, label: str) -> dict:
    """What a run's stored loss lines depend on: the variants at the other end of the lines that end at
    ``label`` (it stores them) and the number of points."""
    p = case.prune
    firsts = [a for a, b in case.diagnostics.pairs if b == label]
    if not firsts:
        return {}
    desc = {v[0]: {"method": v[1], "compensate": v[2], "options": p.options.get(v[1], {}),
                   "procedure": p.procedures[v[0]].model_dump(mode="json") if v[0] in p.procedures else None}
            for v in p.variants}
    return {"lines_from": {a: desc[a] for a in firsts}, "line_points": case.diagnostics.line_points}


def run_key(settings: str, data_sha256: str) -> str:
    """The key of a run: its settings key and the content hash of its data."""
    return _digest({"settings": settings, "data_sha256": data_sha256})


def build_grid(case: Case, *, data_sha256: str) -> list[Run]:
    """Every run of ``case`` on data of content hash ``data_sha256`` (see
    :func:`sciprune.fingerprint.data_fingerprint`) in a fixed order: per (arch, noise, seed) the dense
    run, then each variant x ratio, then the scratch baselines (if ``[baseline] scratch = true``)."""
    p = case.prune
    runs: list[Run] = []

    def add(settings: dict, *args, **kwargs) -> None:
        s = _digest(settings)
        runs.append(Run(run_key(s, data_sha256), *args, **kwargs, settings=s))

    for arch in case.models:
        for level in noise_levels(case):
            for seed in case.seeds:
                base = _base(case, arch, level, seed)
                add({"run": "dense", **base}, "dense", arch, level, seed)
                for label, method, compensate in p.variants:
                    for ratio in p.ratios:
                        add({"run": "prune", **base, "finetune": case.finetune.model_dump(mode="json"),
                             "method": method, "compensate": compensate,
                             "options": p.options.get(method, {}), "ratio": float(ratio), "scope": p.scope,
                             **({} if p.schedule == {"kind": "one-shot"} else {"schedule": p.schedule}),
                             **({} if p.keep_steps == "last" else {"keep_steps": p.keep_steps}),
                             **({} if label not in p.procedures else
                                {"procedure": p.procedures[label].model_dump(mode="json"),
                                 **({"of": _control_of(p, label)} if p.procedures[label].of else {})}),
                             **_lines_of(case, label)},
                            "prune", arch, level, seed, label, method, compensate, ratio)
                if case.baseline.scratch:
                    for ratio in p.ratios:
                        add({"run": "scratch", **base, "ratio": float(ratio)}, "scratch", arch, level, seed, ratio=ratio)
    return runs
