"""The command line: every subcommand has help; user mistakes exit 2 with one line, no traceback."""

import json

import pytest
from click.testing import CliRunner

from sciprune.cli import cli


def _commands(group, prefix=()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))


@pytest.mark.parametrize("path", list(_commands(cli)))
def test_help_for_every_subcommand(path):
    res = CliRunner().invoke(cli, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


def test_required_commands_exist():
    names = {" ".join(p) for p in _commands(cli)}
    for need in ["generate", "generate diffusion-sorption", "data info", "data convert", "train", "prune",
                 "evaluate", "run", "methods"]:
        assert need in names


def test_methods_lists_registry():
    import sciprune

    res = CliRunner().invoke(cli, ["methods"])
    assert res.exit_code == 0
    for m in sciprune.methods():
        assert m in res.output
    lines = {ln.split()[0]: ln for ln in res.output.splitlines() if ln.strip()}
    assert all(("whole neurons" in lines[m]) == (m in sciprune.methods("neuron")) for m in sciprune.methods())


def _user_error(args, needle, tmp_path):
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert "Traceback" not in res.output


def test_missing_case_file(tmp_path):
    _user_error(["run", str(tmp_path / "nope.toml")], "no such case file", tmp_path)


def test_unknown_case_key(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text('[train]\nlearning_rate = 0.1\n')
    _user_error(["run", str(p)], "train.learning_rate: unknown key", tmp_path)


def test_missing_data_file(tmp_path):
    _user_error(["data", "info", str(tmp_path / "none.h5")], "none.h5", tmp_path)


def test_wrong_layout(tmp_path):
    import h5py

    p = tmp_path / "odd.h5"
    with h5py.File(p, "w") as f:
        f["something"] = [1, 2, 3]
    _user_error(["data", "info", str(p)], "odd.h5", tmp_path)


def test_bad_ratio_and_method(tmp_path):
    out = tmp_path / "m.sciprune"
    res = CliRunner().invoke(cli, ["train", "--data", "digits", "--widths", "16", "--epochs", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    _user_error(["prune", str(out), "--method", "magnitude", "--ratio", "1.5", "--out", str(tmp_path / "p")],
                "ratio must be in [0, 1)", tmp_path)
    _user_error(["prune", str(out), "--method", "nonsense", "--ratio", "0.5", "--out", str(tmp_path / "p")],
                "unknown method 'nonsense'", tmp_path)


def test_train_prune_evaluate_on_digits(tmp_path):
    runner = CliRunner()
    dense, pruned = tmp_path / "dense.sciprune", tmp_path / "pruned.sciprune"
    res = runner.invoke(cli, ["train", "--data", "digits", "--widths", "32", "--activation", "relu",
                              "--epochs", "30", "--lr", "0.01", "--out", str(dense)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["prune", str(dense), "--method", "magnitude", "--ratio", "0.5",
                              "--finetune-epochs", "5", "--out", str(pruned)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["evaluate", str(pruned)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert metrics["weight_sparsity"] == pytest.approx(0.5, abs=1e-3)
    assert metrics["test_accuracy"] > 0.5


def test_generate_info_train_evaluate_on_pdebench_file(tmp_path):
    runner = CliRunner()
    data = tmp_path / "ds.h5"
    res = runner.invoke(cli, ["generate", "diffusion-sorption", "--out", str(data), "--samples", "2", "--nx", "16",
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["data", "info", str(data)])
    assert res.exit_code == 0, res.output
    assert "groups" in res.output
    model = tmp_path / "m.sciprune"
    res = runner.invoke(cli, ["train", "--data", str(data), "--sample", "1", "--noise", "uniform", "--noise-level",
                              "0.005", "--widths", "8,8", "--epochs", "5", "--lr", "0.01", "--out", str(model)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["evaluate", str(model)])
    assert res.exit_code == 0, res.output
    metrics = json.loads(res.output)
    assert metrics["weight_sparsity"] == 0.0 and metrics["test_mse"] > 0


def test_nan_in_data_is_a_user_error(tmp_path):
    import h5py
    import numpy as np

    p = tmp_path / "nan.h5"
    u = np.ones((5, 4, 1), dtype="f4")
    u[2, 1, 0] = np.nan
    with h5py.File(p, "w") as f:
        g = f.create_group("0000")
        g["data"] = u
        g["grid/x"] = np.linspace(0.125, 0.875, 4)
        g["grid/t"] = np.linspace(0, 1, 5)
    _user_error(["train", "--data", str(p), "--epochs", "1", "--out", str(tmp_path / "m")], "nan.h5", tmp_path)


def test_prune_compensate_flag(tmp_path):
    """--compensate adds EC bias shifts to magnitude pruning; --no-compensate removes them from ec."""
    import sciprune

    runner = CliRunner()
    dense = tmp_path / "dense.sciprune"
    res = runner.invoke(cli, ["train", "--data", "digits", "--widths", "16", "--epochs", "3", "--out", str(dense)])
    assert res.exit_code == 0, res.output
    biases = {}
    for flag, method in [("--compensate", "magnitude"), ("--no-compensate", "ec"), (None, "magnitude")]:
        out = tmp_path / f"{method}{flag}.sciprune"
        args = ["prune", str(dense), "--method", method, "--ratio", "0.5", "--out", str(out)]
        res = runner.invoke(cli, args + ([flag] if flag else []))
        assert res.exit_code == 0, res.output
        report = json.loads(res.output[: res.output.rindex("}") + 1])
        assert report["compensated"] is (flag == "--compensate")
        biases[(flag, method)] = sciprune.load(out).model.linear0.bias.detach()
    base = sciprune.load(dense).model.linear0.bias.detach()
    assert not biases[("--compensate", "magnitude")].equal(base)
    assert biases[("--no-compensate", "ec")].equal(base)
    assert biases[(None, "magnitude")].equal(base)


def test_threads_option_sets_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        res = CliRunner().invoke(cli, ["--threads", "2", "methods"])
        assert res.exit_code == 0, res.output
        assert torch.get_num_threads() == 2
        res = CliRunner().invoke(cli, ["--threads", "0", "methods"])
        assert res.exit_code == 2
    finally:
        torch.set_num_threads(before)


def test_module_entry_point_runs():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "sciprune.cli", "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "diagnose" in res.stdout and "sweep" in res.stdout


def _independent_test_mse(model_path) -> float:
    """test MSE of ``sciprune.load(model_path)(x, t)`` on the test points, rebuilt from the provenance."""
    import numpy as np

    import sciprune
    from sciprune.config import DataSpec
    from sciprune.tasks import build_task

    sur = sciprune.load(model_path)
    prov = sur.metadata["provenance"]
    task = build_task(DataSpec(**prov["data"]), noise_kind=prov["noise"]["kind"], noise_level=prov["noise"]["level"],
                      seed=prov["seed"]).task
    x = task.input_scaling.inverse(task.X_test.double().numpy())
    y = task.output_scaling.inverse(task.Y_test.double().numpy())[:, 0]
    return float(np.mean((sur(x[:, 0], x[:, 1]) - y) ** 2))


def test_evaluate_reports_the_network_as_a_user_calls_it(tmp_path):
    """evaluate uses the scaling stored in model.json: an edited shift is refused, or used with --rescale-data."""
    runner = CliRunner()
    data, model = tmp_path / "ds.h5", tmp_path / "m.sciprune"
    res = runner.invoke(cli, ["generate", "diffusion-sorption", "--out", str(data), "--nx", "16", "--nt", "5",
                              "--workers", "1"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["train", "--data", str(data), "--noise-level", "0.01", "--widths", "8", "--epochs", "5",
                              "--lr", "0.01", "--out", str(model)])
    assert res.exit_code == 0, res.output
    meta = json.loads((model / "model.json").read_text())
    assert len(meta["provenance"]["data_sha256"]) == 64
    res = runner.invoke(cli, ["evaluate", str(model)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["test_mse"] == pytest.approx(_independent_test_mse(model), rel=1e-5)

    meta["output_scaling"]["shift"][0] += 5.0
    (model / "model.json").write_text(json.dumps(meta))
    res = runner.invoke(cli, ["evaluate", str(model)])
    assert res.exit_code == 2 and "output_scaling" in res.output and "--rescale-data" in res.output, res.output
    assert "Traceback" not in res.output
    res = CliRunner().invoke(cli, ["evaluate", str(model), "--rescale-data"])
    assert res.exit_code == 0, res.output
    shifted = json.loads(res.output[res.output.index("{"):])["test_mse"]
    assert shifted == pytest.approx(_independent_test_mse(model), rel=1e-5)
    assert shifted > 20  # off by about 5 everywhere: the old error is not reported

    pruned = tmp_path / "p.sciprune"
    res = runner.invoke(cli, ["prune", str(model), "--method", "magnitude", "--ratio", "0.3", "--rescale-data",
                              "--out", str(pruned)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output[res.output.index("{"): res.output.rindex("}") + 1])
    kept = json.loads((pruned / "model.json").read_text())
    assert kept["output_scaling"] == meta["output_scaling"]  # the stored scaling travels with the model
    assert kept["provenance"]["data_sha256"] == meta["provenance"]["data_sha256"]
    assert report["pruned"]["test_mse"] == pytest.approx(_independent_test_mse(pruned), rel=1e-5)
