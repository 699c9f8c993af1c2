"""``sciprune diagnose``: each diagnostic runs from the CLI on saved models and rejects what it cannot analyse."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from sciprune.cli import cli
from sciprune.results import read_dataset


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("diag")
    runner = CliRunner()
    for name, act in [("relu", "relu"), ("tanh", "tanh")]:
        res = runner.invoke(cli, ["train", "--data", "digits", "--widths", "12,8", "--activation", act,
                                  "--epochs", "5", "--lr", "0.01", "--out", str(d / f"{name}.sciprune")])
        assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["prune", str(d / "relu.sciprune"), "--method", "ec", "--ratio", "0.6",
                              "--out", str(d / "pruned.sciprune")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["train", "--data", "digits", "--widths", "10", "--epochs", "1", "--out", str(d / "other.sciprune")])
    assert res.exit_code == 0, res.output
    return d


def _ok(args):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def _user_error(args, needle):
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output, res.output


def test_hessian_matches_the_library_on_the_same_data(saved, tmp_path):
    from sciprune.cli_diagnose import _load
    from sciprune.curvature import top_eigenpairs

    out = _ok(["diagnose", "hessian", str(saved / "pruned.sciprune"), "--k", "3", "--tol", "1e-6",
               "--max-points", "300", "--trace-samples", "5", "--out", str(tmp_path)])
    assert "K-FAC spectral radius" in out and "trace ~" in out
    ds = read_dataset(tmp_path / "hessian.nc")
    model, train, _, loss = _load(str(saved / "pruned.sciprune"), "cpu", 300, 0)
    ref = top_eigenpairs(model, train, k=3, loss=loss, tol=1e-6)
    np.testing.assert_allclose(ds["eigenvalue"].values, ref.values, rtol=1e-4)
    # pruned weights are outside the space: its size is the number of kept weights plus the biases
    kept = sum(int(m.sum()) for m in [model.linear0.weight_mask, model.linear1.weight_mask, model.linear2.weight_mask])
    biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert ds.attrs["dim"] == kept + biases
    assert (tmp_path / "hessian_eigenvalues.png").stat().st_size > 0


def test_psp_runs_and_refuses_a_model_without_relu(saved, tmp_path):
    out = _ok(["diagnose", "psp", str(saved / "relu.sciprune"), "--order", "2", "--out", str(tmp_path)])
    assert "linear0:" in out and "bits" in out
    ds = read_dataset(tmp_path / "psp.nc")
    assert {"mean_entropy", "mean_pair_entropy", "mean_psp_sq"} <= set(ds.data_vars)
    assert np.isfinite(ds["mean_entropy"].values).all()
    _user_error(["diagnose", "psp", str(saved / "tanh.sciprune"), "--out", str(tmp_path / "t")], "ReLU")


def test_landscape_endpoints_are_the_two_models(saved, tmp_path):
    import torch.nn.functional as F

    from sciprune.cli_diagnose import _load
    from sciprune.surrogate import load

    _ok(["diagnose", "landscape", str(saved / "relu.sciprune"), str(saved / "pruned.sciprune"), "--points", "5",
         "--grid", "4,3", "--max-points", "200", "--out", str(tmp_path)])
    line = read_dataset(tmp_path / "line.nc")
    _, (X, Y), _, _ = _load(str(saved / "relu.sciprune"), "cpu", 200, 0)
    for alpha, name in [(0.0, "relu"), (1.0, "pruned")]:
        model = load(saved / f"{name}.sciprune").model.eval()
        with torch.no_grad():
            expected = float(F.cross_entropy(model(X), Y))
        assert float(line["train_loss"].sel(alpha=alpha)) == pytest.approx(expected, rel=1e-5)
    plane = read_dataset(tmp_path / "plane.nc")
    assert float(plane["train_loss"].sel(alpha=0.0, beta=0.0)) == pytest.approx(float(line["train_loss"][0]), rel=1e-5)
    for f in ("line.png", "plane.png"):
        assert (tmp_path / f).stat().st_size > 0


def test_landscape_refuses_different_architectures(saved, tmp_path):
    _user_error(["diagnose", "landscape", str(saved / "relu.sciprune"), str(saved / "other.sciprune"),
                 "--out", str(tmp_path)], "architecture")


def test_bad_options_exit_2(saved, tmp_path):
    _user_error(["diagnose", "hessian", str(saved / "relu.sciprune"), "--max-points", "0", "--out", str(tmp_path)],
                "--max-points")
    _user_error(["diagnose", "landscape", str(saved / "relu.sciprune"), str(saved / "pruned.sciprune"), "--grid", "x",
                 "--out", str(tmp_path)], "--grid")
    _user_error(["diagnose", "hessian", str(tmp_path / "none.sciprune"), "--out", str(tmp_path)], "none.sciprune")


def test_diagnose_on_another_pdebench_sample(tmp_path):
    """--data analyses a regression surrogate on another file or sample, in the model's own scaling."""
    from sciprune.curvature import top_eigenpairs
    from sciprune.data.coords import grid_inputs
    from sciprune.data.pdebench import open_pdebench
    from sciprune.surrogate import load

    data = tmp_path / "ds.h5"
    _ok(["generate", "diffusion-sorption", "--out", str(data), "--samples", "2", "--nx", "16", "--nt", "11",
         "--workers", "1"])
    model = tmp_path / "m.sciprune"
    _ok(["train", "--data", str(data), "--sample", "0", "--widths", "8,8", "--epochs", "3", "--lr", "0.01",
         "--out", str(model)])
    _ok(["diagnose", "hessian", str(model), "--data", str(data), "--sample", "1", "--k", "2", "--tol", "1e-8",
         "--out", str(tmp_path / "h")])
    sur = load(model)
    with open_pdebench(data) as f:
        field = f.sample(1)
    X = torch.as_tensor(sur.input_scaling.forward(grid_inputs(field)), dtype=torch.float32)
    Y = torch.as_tensor(sur.output_scaling.forward(np.asarray(field.values, dtype=np.float64).reshape(-1, 1)),
                        dtype=torch.float32)
    ref = top_eigenpairs(sur.model, (X, Y), k=2, loss="mse", tol=1e-8)
    np.testing.assert_allclose(read_dataset(tmp_path / "h" / "hessian.nc")["eigenvalue"].values, ref.values, rtol=1e-4)
    _ok(["diagnose", "landscape", str(model), str(model), "--data", str(data), "--grid", "0,0", "--points", "3",
         "--out", str(tmp_path / "l")])
    _user_error(["diagnose", "hessian", str(model), "--data", str(tmp_path / "none.h5"), "--out", str(tmp_path / "x")],
                "none.h5")


def test_data_option_refuses_a_classifier(saved, tmp_path):
    _user_error(["diagnose", "hessian", str(saved / "relu.sciprune"), "--data", str(tmp_path / "x.h5"),
                 "--out", str(tmp_path)], "regression")
