"""The gradual-against-one-shot study cases (``cases/gradual_vs_oneshot_*.toml``), reduced to run in CI:
every variant (one-shot, lottery ticket, rewinding, the controls, GMP) and every diagnostic comes out
finite, at the exact sparsities, from the shipped case files with only their sizes turned down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sciprune.config import load_case
from sciprune.pipeline import run_case
from sciprune.results import read_dataset

CASES = Path(__file__).resolve().parents[1] / "cases"
SMALL = {
    "seeds": [0], "prune.ratios": [0.5, 0.9], "train.epochs": 3, "finetune.epochs": 1, "save_models": False,
    "prune.procedures.rewind.rewind": 4, "diagnostics.hessian_top": 2,
    "prune.procedures.gmp.schedule": {"kind": "cubic", "n_updates": 3, "every": 2, "start_step": 2},
}
VARIANTS = ["magnitude", "ec", "lottery", "rewind", "reinit", "random-mask", "gmp", "lobster"]


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    import sciprune.pipeline

    monkeypatch.setattr(sciprune.pipeline, "_figures", lambda *args: None)


def _check(ds, variants, entropy=True):
    assert list(ds["method"].values) == variants
    for v in ("test_mse", "test_loss", "hessian_eig", "dense_hessian_eig", "psp_norm", "sparsity", "line_train_loss",
              "line_test_loss",
              *(("psp_entropy", "psp_pair_entropy") if entropy else ())):
        if v in ds:
            assert np.isfinite(ds[v].values).all(), v
    ratios = ds["ratio"].values
    assert (ds["sparsity"].sel({"method": "lobster"}).values <= ratios + 1e-12).all()  # capped at each ratio
    lottery = ds["sparsity"].sel({"method": "lottery"}).values
    for control in ("reinit", "random-mask"):
        np.testing.assert_array_equal(ds["sparsity"].sel({"method": control}).values, lottery)


@pytest.mark.slow
def test_digits_case_runs_reduced(tmp_path):
    case = load_case(CASES / "gradual_vs_oneshot_digits.toml", {**SMALL, "output": str(tmp_path / "out")})
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    _check(ds, VARIANTS)
    assert "psp_entropy" in ds  # LeNet-300-100 is a ReLU network


@pytest.mark.slow
def test_surrogate_case_runs_reduced(tmp_path):
    case = load_case(CASES / "gradual_vs_oneshot_surrogate.toml", {
        **SMALL, "output": str(tmp_path / "out"), "data.file": str(tmp_path / "ds.h5"), "data.generate.nx": 24,
        "data.generate.nt": 11, "noise.levels": [0.0, 0.05], "architectures.tanh.widths": [8, 8],
        "architectures.relu.widths": [8, 8], "train.batch_size": 64, "finetune.batch_size": 64})
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    _check(ds, VARIANTS, entropy=False)
    assert np.isnan(ds["psp_entropy"].sel(arch="tanh").values).all()  # defined for ReLU neurons only
    assert np.isfinite(ds["psp_entropy"].sel(arch="relu").values).all()
