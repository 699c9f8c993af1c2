"""The EC study case files run end to end in reduced form (the full study is for a GPU or a long run)."""

from pathlib import Path

import numpy as np
import xarray as xr

from sciprune.config import load_case
from sciprune.pipeline import run_case

ROOT = Path(__file__).resolve().parents[1]


def _reduced(case_file: str, tmp_path: Path, **extra):
    overrides = {
        "output": str(tmp_path / "out"), "seeds": [0], "prune.ratios": [0.5, 0.9], "prune.snapshot_ratio": 0.5,
        "train.epochs": 5, "finetune.epochs": 2, **extra,
    }
    return load_case(ROOT / "cases" / case_file, overrides)


def test_ec_diffusion_sorption_reduced(tmp_path):
    case = _reduced(
        "ec_diffusion_sorption.toml", tmp_path,
        **{"data.file": str(tmp_path / "ds.h5"), "data.generate.nx": 16, "noise.levels": [0.0, 0.05],
           "architectures": {"tiny": {"widths": [4, 4], "activation": "tanh"}}},
    )
    path = run_case(case, show_progress=False)
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    expected = set(case.prune.methods) | {"magnitude+shift", "gradient+shift", "taylor-output+shift", "ec-noshift"}
    assert set(ds["method"].values) == expected
    assert np.isfinite(ds["test_mse_clean"].values).all()
    assert np.isfinite(ds["scratch_test_mse"].values).all()
    assert (path.parent / "fields.png").exists() and (path.parent / "test_mse_vs_ratio.png").exists()


def test_ec_digits_reduced(tmp_path):
    case = _reduced("ec_digits.toml", tmp_path, **{"model": {"kind": "mlp", "widths": [16], "activation": "relu"},
                                                     "prune.methods": ["ec", "magnitude"],
                                                     "prune.compensate": ["magnitude"], "prune.no_compensate": []})
    path = run_case(case, show_progress=False)
    ds = xr.open_dataset(path, engine="h5netcdf").load()
    assert set(ds["method"].values) == {"ec", "magnitude", "magnitude+shift"}
    acc = ds["test_accuracy"].values
    assert np.isfinite(acc).all() and (acc >= 0).all() and (acc <= 1).all()
