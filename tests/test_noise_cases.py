"""The noise-robustness study cases (``cases/noise_robustness_cpu*.toml``), reduced to run in CI: the shipped
case files with only their sizes turned down run through the ensemble engine (``run_sweep``); every variant
(each weight criterion, the multi-step, rewinding and GMP variants) and the scratch baseline come out finite
at the exact sparsities and every noise level, and ``report --tolerance`` writes the recommendation and
how-far-to-prune tables with a row per (arch, stage, noise, ratio) cell."""

from __future__ import annotations

import csv
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from sciprune.config import load_case
from sciprune.criteria._registry import all_methods
from sciprune.report import report
from sciprune.results import read_dataset
from sciprune.sweep import run_sweep

CASES = Path(__file__).resolve().parents[1] / "cases"
EXTRA = ["ec-14", "qm-14", "rewind", "gmp"]


pytestmark = pytest.mark.usefixtures("no_robustness_figures")  # tests/conftest.py


def _small(tmp_path: Path) -> dict:
    return {"seeds": [0, 1], "noise.levels": [0.0, 0.2], "prune.ratios": [0.5, 0.9], "output": str(tmp_path / "out"),
            "data.file": str(tmp_path / "ds.h5"), "data.generate.nx": 24, "data.generate.nt": 11,
            "architectures.pdebench.widths": [8, 8, 8], "architectures.small.widths": [6, 6],
            "train.epochs": 3, "train.batch_size": 64, "finetune.epochs": 1, "finetune.batch_size": 64,
            "prune.options.ec-exact.examples": 40, "prune.procedures.rewind.rewind": 2,
            "prune.procedures.rewind.schedule": {"kind": "iterative", "levels": [0.5], "budget_epochs": 0},
            "prune.procedures.gmp.schedule": {"kind": "cubic", "n_updates": 3, "every": 2, "start_step": 2}}


@pytest.mark.slow
def test_cpu_case_runs_reduced_through_the_sweep_and_reports(tmp_path):
    case = load_case(CASES / "noise_robustness_cpu.toml", _small(tmp_path))
    ds = read_dataset(run_sweep(case, show_progress=False, echo=lambda s: None))
    assert "obs" not in ds["method"].values  # left out of "all" for its cost (see the case file)
    assert sorted(ds["method"].values[: -len(EXTRA)]) == sorted(all_methods())
    assert list(ds["method"].values[-len(EXTRA):]) == EXTRA
    assert list(ds["arch"].values) == ["small", "pdebench"] and list(ds["noise"].values) == [0.0, 0.2]
    for v in ("test_mse", "test_mse_clean", "scratch_test_mse_clean", "dense_test_mse_clean", "sparsity"):
        assert np.isfinite(ds[v].values).all(), v
    for arch, widths in (("small", [6, 6]), ("pdebench", [8, 8, 8])):
        n = sum(a * b for a, b in zip([2, *widths], [*widths, 1]))
        for r in (0.5, 0.9):
            got = ds["sparsity"].sel({"arch": arch, "ratio": r}).values
            np.testing.assert_allclose(got, math.floor(r * n + 0.5) / n, rtol=0, atol=1e-12)
    assert "field_rms" in ds.attrs  # the signal-to-noise axis of the robustness figures
    text = report(tmp_path / "out" / "results.nc", tolerance=2.0).read_text()
    assert "## Noise robustness" in text
    rows = list(csv.DictReader((tmp_path / "out" / "recommendation.csv").open()))
    assert len(rows) == 2 * 2 * 2 * 2  # arch x stage x noise x ratio
    assert all(r["winner"] in [*ds["method"].values, "scratch", ""] for r in rows)
    reach = list(csv.DictReader((tmp_path / "out" / "tolerance.csv").open()))
    assert {r["arch"] for r in reach} == {"small", "pdebench"} and {float(r["tolerance"]) for r in reach} == {2.0}


def test_gaussian_twin_differs_only_in_its_noise_and_output():
    """The two cases must stay comparable: everything but the noise, the name and the output is shared."""
    uni = tomllib.loads((CASES / "noise_robustness_cpu.toml").read_text())
    gau = tomllib.loads((CASES / "noise_robustness_cpu_gaussian.toml").read_text())
    assert gau["noise"] == {"kind": "gaussian", "levels": [pytest.approx(0.1 / math.sqrt(3), abs=1e-4)]}
    assert 0.1 in uni["noise"]["levels"]
    for key in ("name", "output", "noise"):
        uni.pop(key), gau.pop(key)
    assert uni == gau
    load_case(CASES / "noise_robustness_cpu_gaussian.toml")  # and it loads
