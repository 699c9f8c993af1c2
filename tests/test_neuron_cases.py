"""The neuron-pruning study cases (``cases/neurons_*.toml``), reduced to run in CI: every variant
(one-shot neuron-magnitude and taylor-neuron, taylor in rounds, HGNP and its two ablations, the dense
network of HGNP's widths) and every diagnostic comes out finite at the exact neuron sparsities, from the
shipped case files with only their sizes turned down; the compacted networks are what is measured."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sciprune.config import load_case
from sciprune.pipeline import run_case
from sciprune.results import read_dataset

CASES = Path(__file__).resolve().parents[1] / "cases"
VARIANTS = ["neuron-magnitude", "taylor-neuron", "taylor-rounds", "hgnp", "hgnp-mu0-train", "hgnp-mu0-select",
            "hgnp-widths"]


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    import sciprune.pipeline

    monkeypatch.setattr(sciprune.pipeline, "_figures", lambda *args: None)


def _small(case_file: Path, per_round: int, scope: str, **more) -> dict:
    rounds = {"per_round": per_round, "pre_epochs": 1, "between_epochs": 1, "finetune_epochs": 1, "scope": scope}
    out = {"seeds": [0], "prune.ratios": [0.3, 0.7], "train.epochs": 2, "finetune.epochs": 1, "save_models": False,
           "diagnostics.hessian_top": 2, "prune.procedures.taylor-rounds.rounds": dict(rounds, pre_epochs=0), **more}
    for name in ("hgnp", "hgnp-mu0-train", "hgnp-mu0-select"):
        out[f"prune.procedures.{name}.rounds"] = rounds
    return out


def _check(ds, hidden: list[int], scope: str):
    assert list(ds["method"].values) == VARIANTS
    for v in ("test_mse" if "test_mse" in ds else "test_loss", "hessian_eig", "kfac_radius", "inference_us", "sparsity", "dense_kfac_radius"):
        assert np.isfinite(ds[v].values).all(), v
    for r in ds["ratio"].values:
        removed = (math.floor(r * sum(hidden) + 0.5) if scope == "global"
                   else sum(math.floor(r * n + 0.5) for n in hidden))
        for m in VARIANTS:
            assert ds["sparsity"].sel({"method": m, "ratio": r}).values.ravel()[0] == removed / sum(hidden), (m, r)
    assert (ds["inference_us"].values > 0).all()


@pytest.mark.slow
def test_digits_case_runs_reduced(tmp_path):
    case = load_case(CASES / "neurons_digits.toml", {**_small(CASES / "neurons_digits.toml", 100, "global"),
                                                      "output": str(tmp_path / "out")})
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    _check(ds, [300, 100], "global")


@pytest.mark.slow
def test_surrogate_case_runs_reduced(tmp_path):
    case = load_case(CASES / "neurons_surrogate.toml", {
        **_small(CASES / "neurons_surrogate.toml", 6, "layer"), "output": str(tmp_path / "out"),
        "data.file": str(tmp_path / "ds.h5"), "data.generate.nx": 24, "data.generate.nt": 11,
        "model.widths": [8, 8, 8], "train.batch_size": 64, "finetune.batch_size": 64, "noise.levels": [0.0, 0.05]})
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    _check(ds, [8, 8, 8], "layer")
