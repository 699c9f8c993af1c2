"""End to end: a reduced quickstart (data generated when missing) and a reduced digits study."""

import json
from pathlib import Path

import numpy as np
import xarray as xr
from click.testing import CliRunner

import sciprune
from sciprune.cli import cli

ROOT = Path(__file__).resolve().parents[1]


def _write_case(tmp_path: Path, **sub) -> Path:
    text = (ROOT / "cases" / "quickstart.toml").read_text()
    for old, new in sub.items():
        assert old in text, old
        text = text.replace(old, new)
    p = tmp_path / "case.toml"
    p.write_text(text)
    return p


def test_reduced_quickstart_end_to_end(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = _write_case(
        tmp_path,
        **{"nx = 256": "nx = 24", "epochs = 1500": "epochs = 30", "epochs = 150": "epochs = 5",
           "ratios = [0.5, 0.7, 0.8, 0.9]": "ratios = [0.3, 0.9]", "widths = [32, 32, 32]": "widths = [8, 8]",
           "seeds = [0]": "seeds = [0, 1]"},
    )
    res = CliRunner().invoke(cli, ["run", str(case), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (tmp_path / "data" / "diffusion_sorption_quickstart.h5").exists()
    out = tmp_path / "runs" / "quickstart"
    ds = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    assert dict(ds.sizes) == {"noise": 1, "seed": 2, "method": len(sciprune.methods()), "ratio": 2, "stage": 2}
    assert list(ds["stage"].values) == ["pruned", "finetuned"]
    for v in ("test_mse", "test_mse_clean", "field_nrmse", "dense_test_mse"):
        assert np.isfinite(ds[v].values).all(), v
    # achieved sparsity equals the requested ratio (rounding of one weight at most)
    n_weights = 2 * 8 + 8 * 8 + 8 * 1
    expected = np.floor(ds["ratio"].values * n_weights + 0.5) / n_weights
    np.testing.assert_allclose(ds["sparsity"].sel(stage="finetuned").values, np.broadcast_to(expected, ds["sparsity"].sel(stage="finetuned").shape))
    case_attr = json.loads(ds.attrs["case"])
    assert case_attr["noise"]["levels"] == [0.005]
    assert (out / "test_mse_vs_ratio.png").stat().st_size > 1000
    assert (out / "fields.png").stat().st_size > 1000
    # the saved surrogates load and are called in physical units
    models = sorted((out / "models").glob("*.sciprune"))
    assert models
    s = sciprune.load(models[-1])
    u = s(np.linspace(0, 1, 5), np.full((3, 1), 100.0))
    assert u.shape == (3, 5) and np.isfinite(u).all()
    assert s.metadata["provenance"]["noise"] == {"kind": "uniform", "level": 0.005}


def test_reduced_digits_study(tmp_path):
    p = tmp_path / "digits.toml"
    p.write_text(
        f'name = "digits"\noutput = "{tmp_path / "out"}"\nsave_models = false\n'
        '[data]\nkind = "classification"\nsource = "digits"\n[noise]\nkind = "none"\nlevels = [0.0]\n'
        '[model]\nwidths = [32]\nactivation = "relu"\n[train]\nlr = 0.01\nepochs = 40\n'
        '[prune]\nratios = [0.5]\n[finetune]\nepochs = 5\nlr = 0.003\n'
    )
    res = CliRunner().invoke(cli, ["run", str(p), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    ds = xr.open_dataset(tmp_path / "out" / "results.nc", engine="h5netcdf").load()
    assert float(ds["dense_test_accuracy"].squeeze()) > 0.8
    assert (tmp_path / "out" / "test_accuracy_vs_ratio.png").exists()
