"""The loss-modelling study cases (``cases/loss_modelling_*.toml``), reduced to run in CI: every variant
(magnitude, LM, QM, OBD, EC, obs-layer, whole-network obs on the surrogate, the locality grid and the
multi-step variants) comes out finite at both stages, at the exact sparsities, from the shipped case
files with only their sizes turned down (multi-step variants to 2 steps)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest

from sciprune.config import load_case
from sciprune.pipeline import run_case
from sciprune.results import read_dataset

CASES = Path(__file__).resolve().parents[1] / "cases"
SMALL = {"seeds": [0], "train.epochs": 2, "finetune.epochs": 1, "save_models": False}

pytestmark = pytest.mark.usefixtures("no_figures")


def _reduced(name: str, **extra):
    """The case ``name`` with its sizes turned down and every multi-step procedure cut to 2 steps."""
    path = CASES / f"{name}.toml"
    procedures = tomllib.loads(path.read_text())["prune"].get("procedures", {})
    steps = {f"prune.procedures.{label}.schedule.steps": 2 for label, p in procedures.items()
             if p.get("schedule", {}).get("kind") == "multi-step"}
    case = load_case(path, {**SMALL, **steps, **extra})
    return case, list(case.prune.methods) + list(procedures)


def _check(ds, labels, n_weights):
    assert list(ds["method"].values) == labels
    metric = "test_accuracy" if "test_accuracy" in ds else "test_mse_clean"
    assert np.isfinite(ds[metric].values).all()
    exact = np.floor(ds["ratio"].values * n_weights + 0.5) / n_weights
    np.testing.assert_allclose(ds["sparsity"].values, np.broadcast_to(exact, ds["sparsity"].shape), atol=1e-12)


@pytest.mark.slow
def test_digits_case_runs_reduced(tmp_path):
    case, labels = _reduced("loss_modelling_digits", **{"output": str(tmp_path / "out"), "model.widths": [12, 8],
                                                        "prune.ratios": [0.5, 0.98847]})
    assert {"lm-lam1e-3", "qm-14", "ec-14"} <= set(labels)
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    _check(ds, labels, 64 * 12 + 12 * 8 + 8 * 10)
    assert '"locality": 0.01' in ds.attrs["case"]  # the grid's options reach the results' provenance


@pytest.mark.slow
def test_surrogate_case_runs_reduced(tmp_path):
    case, labels = _reduced("loss_modelling_surrogate", **{
        "output": str(tmp_path / "out"), "data.file": str(tmp_path / "ds.h5"), "data.generate.nx": 24,
        "data.generate.nt": 11, "noise.levels": [0.0, 0.05], "model.widths": [8, 8], "train.batch_size": 64,
        "finetune.batch_size": 64, "prune.ratios": [0.5, 0.9]})
    assert "obs" in labels
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    _check(ds, labels, 2 * 8 + 8 * 8 + 8)


@pytest.mark.slow
def test_digits_obs_case_runs_reduced(tmp_path):
    case, labels = _reduced("loss_modelling_digits_obs", **{"output": str(tmp_path / "out"), "model.widths": [12, 8]})
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    _check(ds, labels, 64 * 12 + 12 * 8 + 8 * 10)
