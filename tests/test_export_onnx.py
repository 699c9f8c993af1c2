"""ONNX export of saved surrogates: the graph under ONNX Runtime equals sciprune.load(path)(x) in physical
units, with a dynamic batch axis; compacted graphs are smaller with the same outputs; onnx.checker and
metadata; every user mistake of ``sciprune export`` is one line, exit 2, and leaves no file behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import sciprune  # noqa: E402
from sciprune import export as ex  # noqa: E402
from sciprune.cli import cli  # noqa: E402
from sciprune.errors import SciPruneError  # noqa: E402
from sciprune.masks import get_masks, set_masks  # noqa: E402
from sciprune.models import MLP  # noqa: E402
from sciprune.scaling import Scaling  # noqa: E402

from helpers import assert_close  # noqa: E402

# the diffusion-sorption surrogate: u(x, t) with x in [0, 1], t in [0, 500]
IN_S = Scaling([0.5, 250.0], [0.5, 250.0])
OUT_S = Scaling([0.4], [0.3])
PROV = {"method": "neuron-magnitude", "ratio": 0.5, "seed": 3, "data": {"file": "data/ds.h5", "sample": 0}}


def regression_model(dtype: torch.dtype, seed: int = 0) -> MLP:
    """A 2-12-12-1 tanh network; float32 has whole neurons pruned, float64 random weight masks."""
    model = MLP(2, [12, 12], 1, "tanh", seed=seed)
    if dtype == torch.float32:
        sciprune.prune(model, "neuron-magnitude", 0.5)
    else:
        model = model.to(dtype)
        g = torch.Generator().manual_seed(seed)
        set_masks(model, {n: torch.rand(p.shape, generator=g) > 0.3 for n, p in model.named_parameters()
                          if n.endswith("weight")})
    return model


def save_regression(folder: Path, dtype: torch.dtype) -> Path:
    return sciprune.save(regression_model(dtype), folder / "model.sciprune", input_scaling=IN_S, output_scaling=OUT_S,
                         provenance=PROV, input_names=["x", "t"], output_names=["u"])


def physical_points(n: int, seed: int = 1) -> np.ndarray:
    """Points in and a little beyond the training box (the graph must hold outside it too)."""
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(-0.1, 1.1, n), rng.uniform(-10.0, 510.0, n)]


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def weight_shapes(path: Path) -> list[tuple[int, ...]]:
    """Shapes of the graph's 2-D initializers (the Gemm weight matrices), in graph order."""
    return [tuple(t.dims) for t in onnx.load(str(path)).graph.initializer if len(t.dims) == 2]


def alive_widths(model) -> list[int]:
    """Reference: per hidden layer, neurons with a kept incoming row and a kept outgoing column."""
    masks = get_masks(model)
    names = [f"linear{i}.weight" for i in range(3)]
    rows = [masks[n].any(dim=1) for n in names[:-1]]
    cols = [masks[n].any(dim=0) for n in names[1:]]
    return [int((r & c).sum()) for r, c in zip(rows, cols)]


@pytest.fixture(scope="module", params=[torch.float32, torch.float64], ids=["float32", "float64"])
def regression(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(str(request.param).removeprefix("torch."))
    path = save_regression(folder, request.param)
    report = ex.export_onnx(path, folder / "u.onnx")
    return path, report


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clf")
    model = MLP(4, [8], 3, "relu", seed=2)
    in_s = Scaling([1.0, -2.0, 0.0, 5.0], [2.0, 0.5, 1.0, 3.0])
    path = sciprune.save(model, folder / "c.sciprune", task="classification", input_scaling=in_s,
                         class_names=["a", "b", "c"], input_names=["p", "q", "r", "s"])
    return path, ex.export_onnx(path, folder / "c.onnx")


@pytest.mark.parametrize("batch", [1, 4096])
def test_regression_equals_load_in_physical_units(regression, batch):
    path, report = regression
    sur = sciprune.load(path)
    x = physical_points(batch)
    got = run_onnx(report.path, x)
    assert got.dtype == np.float64 and got.shape == (batch, 1)
    rtol = 1e-5 if sur.dtype == torch.float32 else 1e-12
    assert_close(got, sur(x), rtol=rtol, what=f"batch {batch}")
    assert report.max_rel_diff <= rtol


@pytest.mark.parametrize("regression", [torch.float32], ids=["float32"], indirect=True)  # the neuron-pruned one
def test_compacted_graph_is_smaller_with_equal_outputs(regression):
    path, report = regression
    sur = sciprune.load(path)
    widths = alive_widths(sur.model)
    assert 0 < sum(widths) < 24 and report.exported_sizes == [2, *widths, 1]
    assert report.saved_sizes == [2, 12, 12, 1] and report.removed == [12 - w for w in widths]
    assert weight_shapes(report.path) == [(widths[0], 2), (widths[1], widths[0]), (1, widths[1])]
    assert "compacted 2-12-12-1" in report.describe_compaction()
    x = physical_points(256, seed=5)
    assert_close(run_onnx(report.path, x), sur(x), rtol=1e-5, what="compacted graph against the masked surrogate")


@pytest.mark.parametrize("batch", [1, 4096])
def test_classifier_probabilities_equal_load(classifier, batch):
    path, report = classifier
    sur = sciprune.load(path)
    x = np.random.default_rng(batch).normal(size=(batch, 4)) * sur.input_scaling.scale + sur.input_scaling.shift
    got = run_onnx(report.path, x)
    assert got.shape == (batch, 3)
    assert_close(got, sur(x), rtol=1e-5, what=f"batch {batch}")
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_checker_and_metadata(regression, classifier):
    for path, report in (regression, classifier):
        model = onnx.load(str(report.path))
        onnx.checker.check_model(model, full_check=True)
        meta = {p.key: p.value for p in model.metadata_props}
        record = json.loads((path / "model.json").read_text())
        sur = sciprune.load(path)
        name = "output" if sur.task == "regression" else "probabilities"
        assert [i.name for i in model.graph.input] == ["input"] and [o.name for o in model.graph.output] == [name]
        for value, width in ((model.graph.input[0], sur.in_features), (model.graph.output[0], sur.out_features)):
            dims = value.type.tensor_type.shape.dim
            assert dims[0].dim_param == "batch" and dims[1].dim_value == width  # dynamic batch axis
            assert value.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
        inp, out = json.loads(meta["input"]), json.loads(meta["output"])
        assert inp == {"name": "input", "dtype": "float64", "shape": ["batch", sur.in_features],
                       "columns": record["input_names"], "units": ex._UNITS}
        assert out["columns"] == (record["output_names"] if sur.task == "regression" else record["class_names"])
        assert meta["task"] == record["task"] and json.loads(meta["provenance"]) == record["provenance"]
        for key in ("input_scaling", "output_scaling"):
            assert json.loads(meta[key]) == record[key]
        assert json.loads(meta["compaction"])["exported_sizes"] == report.exported_sizes
        assert model.producer_name == "sciprune" and ", ".join(record["input_names"]) in model.doc_string
    assert "provenance" in model.doc_string and "physical units" in model.doc_string


def test_verification_refuses_a_graph_of_another_surrogate(regression, tmp_path):
    path, report = regression
    other = sciprune.load(save_regression(tmp_path, sciprune.load(path).dtype))
    with torch.no_grad():
        other.model[-1].bias.add_(1.0)
    with pytest.raises(SciPruneError, match="differs from the surrogate"):
        ex._verify(report.path.read_bytes(), other)


def _fails(args: list[str], needle: str, folder: Path) -> None:
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    res = CliRunner().invoke(cli, ["--threads", "1", "export", *args], catch_exceptions=False)
    assert res.exit_code == 2, res.output
    assert res.output.startswith("Error: ") and res.output.strip().count("\n") == 0, res.output
    assert needle in res.output, res.output
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # nothing left behind


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    return save_regression(tmp_path_factory.mktemp("cli"), torch.float32)


@pytest.mark.parametrize("case", ["missing", "empty-dir", "file", "format", "opset-low", "opset-high", "out-dir"])
def test_cli_bad_inputs_one_line_nothing_written(saved, tmp_path, case):
    bad_dir = tmp_path / "d"
    bad_dir.mkdir()
    (tmp_path / "f.txt").write_text("not a model")
    out = str(tmp_path / "u.onnx")
    args, needle = {
        "missing": ([str(tmp_path / "nope.sciprune"), "--output", out], "does not exist"),
        "empty-dir": ([str(bad_dir), "--output", out], "is missing"),
        "file": ([str(tmp_path / "f.txt"), "--output", out], "is a file"),
        "format": ([str(saved), "--format", "tflite", "--output", out], "format must be one of"),
        "opset-low": ([str(saved), "--opset", "17", "--output", out], "opset must be an integer in [18,"),
        "opset-high": ([str(saved), "--opset", "99", "--output", out], "opset must be an integer in [18,"),
        "out-dir": ([str(saved), "--output", str(bad_dir)], "is a folder"),
    }[case]
    _fails(args, needle, tmp_path)


def test_cli_missing_package_names_the_extra(saved, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript raises ImportError
    _fails([str(saved), "--output", str(tmp_path / "u.onnx")], "pip install 'sciprune[export]'", tmp_path)


def test_cli_writes_beside_the_model_and_refuses_to_overwrite_without_force(saved):
    out = saved.with_suffix(".onnx")
    res = CliRunner().invoke(cli, ["--threads", "1", "export", str(saved)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert f"wrote {out}" in res.output and "compacted 2-12-12-1" in res.output
    first = out.read_bytes()
    _fails([str(saved)], "exists", saved.parent)
    assert out.read_bytes() == first
    res = CliRunner().invoke(cli, ["--threads", "1", "export", str(saved / "model.json"), "--force", "--no-compact"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "dead hidden neurons (no compaction)" in res.output
    assert weight_shapes(out) == [(12, 2), (12, 12), (1, 12)]
    x = physical_points(64)
    assert_close(run_onnx(out, x), sciprune.load(saved)(x), rtol=1e-5)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["model.onnx", "model.sciprune"]


def test_failed_write_leaves_nothing(saved, tmp_path, monkeypatch):
    import errno

    import sciprune.outputs

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sciprune.outputs.os, "replace", full)
    with pytest.raises(SciPruneError, match="No space left on device; nothing was written"):
        ex.export_onnx(saved, tmp_path / "new" / "deeper" / "u.onnx")
    assert list(tmp_path.iterdir()) == []
