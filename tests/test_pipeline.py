"""End to end: a reduced quickstart (data generated when missing) and a reduced digits study."""

import json
from pathlib import Path

import numpy as np
import xarray as xr
from click.testing import CliRunner

import sciprune
from sciprune import criteria
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
    assert dict(ds.sizes) == {"arch": 1, "noise": 1, "seed": 2, "method": len(criteria.all_methods()), "ratio": 2, "stage": 2}
    assert list(ds["stage"].values) == ["pruned", "finetuned"]
    for v in ("test_mse", "test_mse_clean", "field_nrmse", "dense_test_mse"):
        assert np.isfinite(ds[v].values).all(), v
    # achieved sparsity equals the requested ratio (rounding of one weight at most)
    n_weights = 2 * 8 + 8 * 8 + 8 * 1
    expected = np.floor(ds["ratio"].values * n_weights + 0.5) / n_weights
    np.testing.assert_allclose(ds["sparsity"].values, np.broadcast_to(expected, ds["sparsity"].shape))
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


def _small_case(tmp_path: Path, extra: str = "") -> Path:
    return _write_case(
        tmp_path,
        **{"nx = 256": "nx = 16", "epochs = 1500": "epochs = 10", "epochs = 150": "epochs = 2",
           "ratios = [0.5, 0.7, 0.8, 0.9]": "ratios = [0.5, 0.8]" + extra, "widths = [32, 32, 32]": "widths = [6, 6]",
           "seeds = [0]": "seeds = [0, 1]"},
    )


def test_interrupted_run_resumes_without_redoing_blocks(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = _small_case(tmp_path)
    runner = CliRunner()
    assert runner.invoke(cli, ["run", str(case), "--quiet"], catch_exceptions=False).exit_code == 0
    out = tmp_path / "runs" / "quickstart"
    first = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    blocks = sorted((out / "blocks").glob("*.nc"))
    assert len(blocks) == 2
    # as if killed after the first block: the second block and the results file are missing
    kept_mtime = blocks[0].stat().st_mtime_ns
    blocks[1].unlink()
    (out / "results.nc").unlink()
    assert runner.invoke(cli, ["run", str(case), "--quiet"], catch_exceptions=False).exit_code == 0
    assert blocks[0].stat().st_mtime_ns == kept_mtime  # the finished block was not redone
    again = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    for v in first.data_vars:
        np.testing.assert_allclose(again[v].values, first[v].values, rtol=1e-6, err_msg=v)
    # a changed case recomputes its blocks instead of mixing results
    text = case.read_text().replace("lr = 3e-3", "lr = 2e-3")
    case.write_text(text)
    res = runner.invoke(cli, ["run", str(case), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0 and "different case" in res.output


def test_architectures_variants_and_scratch_baseline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    case = _small_case(tmp_path, extra="\ncompensate = [\"random\"]\nno_compensate = [\"magnitude\"]")
    text = case.read_text()
    text = text.replace("[model]\nwidths = [6, 6]\nactivation = \"tanh\"",
                        "[architectures.small]\nwidths = [4]\n[architectures.deep]\nwidths = [6, 6, 6]\nactivation = \"sin\"\n"
                        "[baseline]\nscratch = true")
    text = text.replace("seeds = [0, 1]", "seeds = [0]")
    case.write_text(text)
    res = CliRunner().invoke(cli, ["run", str(case), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    out = tmp_path / "runs" / "quickstart"
    ds = xr.open_dataset(out / "results.nc", engine="h5netcdf").load()
    assert set(ds["arch"].values) == {"small", "deep"}
    assert {"random+shift", "magnitude-noshift"} <= set(ds["method"].values)
    assert np.isfinite(ds["scratch_test_mse"].values).all()
    w = ds["scratch_weights"].sel(arch="deep").squeeze().values
    dense = float(ds["dense_weights"].sel(arch="deep").squeeze())
    np.testing.assert_allclose(w, (1 - ds["ratio"].values) * dense, rtol=0.25)
    assert (out / "test_mse_vs_ratio_deep.png").exists() and (out / "fields_small.png").exists()
