"""Malformed input to the library entry points: one-line SciPruneError, never a raw TypeError/KeyError/RuntimeError.

One tiny trained model is shared by the module; every case asserts the error class, one line, and the
words that name the offending argument, key or value.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from malformed import assert_raises_user_error, snapshot, tmpfs

import sciprune
from sciprune.errors import DataFormatError
from sciprune.scaling import Scaling


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("lib")
    g = torch.Generator().manual_seed(0)
    X = torch.rand(24, 2, generator=g) * 2 - 1
    Y = torch.sin(X[:, :1]) + X[:, 1:]
    model = sciprune.MLP(2, [4], 1, seed=0)
    sciprune.fit(model, (X, Y), sciprune.TrainConfig(epochs=3, lr=0.01))
    path = sciprune.save(model, d / "m.sciprune", input_scaling=Scaling(np.zeros(2), np.ones(2)),
                         output_scaling=Scaling(np.array([0.5]), np.array([2.0])), input_names=["x", "t"],
                         output_names=["u"], provenance={"seed": 0})
    return SimpleNamespace(dir=d, path=path, X=X, Y=Y, model=model, meta=json.loads((path / "model.json").read_text()))


def _fresh():
    return sciprune.MLP(2, [4], 1, seed=0)


# --------------------------------------------------------------------------- model.json schema
def _set(meta: dict, dotted: str, value) -> dict:
    node, *_ = meta, None
    *parents, last = dotted.split(".")
    for p in parents:
        node = node[p]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return meta


_DELETE = object()
_DEEP: list = []
for _ in range(200):
    _DEEP = [_DEEP]

SCHEMA_CASES = [
    ("output_scaling.shift", [float("nan")], ["output_scaling.shift.0", "finite"]),
    ("output_scaling.shift", [float("inf")], ["output_scaling.shift.0", "finite"]),
    ("input_scaling.scale", [1.0, float("-inf")], ["input_scaling.scale.1", "finite"]),
    ("input_scaling.scale", [1.0, 0.0], ["input_scaling.scale", "non-zero"]),
    ("output_scaling.shift", ["nan"], ["output_scaling.shift.0", "number"]),
    ("input_scaling.shift", [0.0], ["input_scaling", "one length"]),
    ("input_scaling", [0.0, 1.0], ["input_scaling", "object"]),
    ("architecture", [2, 4, 1], ["architecture", "object"]),
    ("architecture", _DELETE, ["architecture", "missing"]),
    ("architecture.sizes", ["2", 4, 1], ["architecture.sizes.0", "integer"]),
    ("architecture.sizes", [2, 4000000000, 1], ["architecture.sizes", "GiB"]),
    ("architecture.sizes", [2, 0, 1], ["architecture.sizes.1", "greater than"]),
    ("architecture.activation", "swish", ["architecture.activation"]),
    ("task", "forecast", ["task", "regression"]),
    ("dtype", "int8", ["dtype"]),
    ("weights.sha256", _DELETE, ["weights.sha256", "missing"]),
    ("weights.bytes", -1, ["weights.bytes"]),
    ("weights", "weights.safetensors", ["weights", "object"]),
    ("format_version", "1", ["format_version", "version 1"]),
    ("format_version", 2, ["format_version", "version 1"]),
    ("format", "onnx", ["format", "sciprune-surrogate"]),
    ("input_names", ["x", 5], ["input_names.1", "string"]),
    ("masks", [1, 2], ["masks", "object"]),
    ("provenance", [1], ["provenance", "object"]),
    ("provenance", {"deep": _DEEP}, ["provenance.deep", "nested"]),
    ("versions", {"torch": 2}, ["versions.torch", "string"]),
    ("surprise", 1, ["surprise", "not part of the format"]),
]


@pytest.mark.parametrize("key,value,needles", SCHEMA_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(SCHEMA_CASES)])
def test_model_json_is_read_through_one_schema(tiny, tmp_path, key, value, needles):
    bad = tmp_path / "bad.sciprune"
    shutil.copytree(tiny.path, bad)
    meta = _set(json.loads(json.dumps(tiny.meta)), key, value)
    (bad / "model.json").write_text(json.dumps(meta))  # json writes NaN and Infinity as such
    assert_raises_user_error(lambda: sciprune.load(bad), str(bad / "model.json"), *needles)
    with pytest.raises(DataFormatError):
        sciprune.load(bad)


@pytest.mark.parametrize("text,needle", [
    ("[1, 2]", "JSON object"), ("{", "not valid JSON"), ("\xff\xfe", "not valid JSON"), ("[" * 100000, "nested"),
], ids=["list", "truncated", "binary", "very-deep"])
def test_model_json_that_is_not_an_object(tiny, tmp_path, text, needle):
    bad = tmp_path / "bad.sciprune"
    shutil.copytree(tiny.path, bad)
    (bad / "model.json").write_bytes(text.encode("latin-1"))
    assert_raises_user_error(lambda: sciprune.load(bad), "model.json", needle)


def test_truncated_weights_are_refused_before_reading(tiny, tmp_path):
    bad = tmp_path / "bad.sciprune"
    shutil.copytree(tiny.path, bad)
    data = (bad / "weights.safetensors").read_bytes()
    (bad / "weights.safetensors").write_bytes(data[:-5])
    assert_raises_user_error(lambda: sciprune.load(bad), "weights.bytes", "truncated")


# --------------------------------------------------------------------------- entry points
LOAD = [
    ("none", lambda t: sciprune.load(None), ["path", "NoneType"]),
    ("int", lambda t: sciprune.load(3), ["path", "int"]),
    ("bytes", lambda t: sciprune.load(b"m.sciprune"), ["path", "bytes"]),
    ("nul", lambda t: sciprune.load("a\x00b"), ["NUL"]),
    ("missing", lambda t: sciprune.load(t.dir / "nope.sciprune"), ["nope.sciprune", "does not exist"]),
    ("a-file", lambda t: sciprune.load(t.path / "weights.safetensors"), ["is a file"]),
    ("tpu", lambda t: sciprune.load(t.path, device="tpu"), ["device", "'tpu'"]),
    ("device-int", lambda t: sciprune.load(t.path, device=5), ["device", "5"]),
    ("cuda-x", lambda t: sciprune.load(t.path, device="cuda:x"), ["device", "cuda:x"]),
    ("to-tpu", lambda t: sciprune.load(t.path).to("tpu"), ["device", "tpu"]),
    ("to-int-dtype", lambda t: sciprune.load(t.path).to(dtype=torch.int64), ["dtype"]),
]

SAVE = [
    ("path-none", lambda t: sciprune.save(t.model, None), ["path", "NoneType"]),
    ("path-nul", lambda t: sciprune.save(t.model, str(t.dir / "a\x00b")), ["NUL"]),
    ("model-none", lambda t: sciprune.save(None, t.dir / "x"), ["model", "NoneType"]),
    ("task", lambda t: sciprune.save(t.model, t.dir / "x", task="forecast"), ["task", "forecast"]),
    ("scaling-nan", lambda t: sciprune.save(t.model, t.dir / "x", input_scaling=Scaling([math.nan, 0.0], [1.0, 1.0])),
     ["shift", "finite"]),
    ("scaling-size", lambda t: sciprune.save(t.model, t.dir / "x", output_scaling=Scaling.identity(3)),
     ["output_scaling", "3 features"]),
    ("names-int", lambda t: sciprune.save(t.model, t.dir / "x", input_names=[1, 2]), ["input_names", "strings"]),
    ("names-str", lambda t: sciprune.save(t.model, t.dir / "x", input_names="xt"), ["input_names"]),
    ("provenance-object", lambda t: sciprune.save(t.model, t.dir / "x", provenance={"a": object()}),
     ["provenance['a']", "object"]),
    ("provenance-list", lambda t: sciprune.save(t.model, t.dir / "x", provenance=[1]), ["provenance", "list"]),
    ("over-a-file", lambda t: sciprune.save(t.model, t.path / "model.json"), ["model.json", "not a saved surrogate"]),
    ("parent-is-file", lambda t: sciprune.save(t.model, t.path / "model.json" / "m.sciprune"), ["model.json", "not a folder"]),
]

CALL = [
    ("none", lambda s: s(None), ["input 0", "object"]),
    ("text", lambda s: s("a"), ["input 0", "numeric"]),
    ("complex", lambda s: s(np.ones((3, 2), complex)), ["complex", "real part"]),
    ("nan", lambda s: s(np.array([[0.1, np.nan]])), ["finite", "nan", "t", "row 0"]),
    ("inf-coords", lambda s: s(np.array([0.1, np.inf]), 0.5), ["finite", "inf", "x", "row 1"]),
    ("shape", lambda s: s(np.ones((3, 3))), ["F_in=2", "(3, 3)"]),
    ("three-arrays", lambda s: s(1.0, 2.0, 3.0), ["F_in=2", "3 coordinate arrays"]),
    ("no-broadcast", lambda s: s(np.ones(3), np.ones(4)), ["do not broadcast"]),
    ("batch-zero", lambda s: s(np.ones((3, 2)), batch_size=0), ["batch_size", "0"]),
    ("batch-text", lambda s: s(np.ones((3, 2)), batch_size="a"), ["batch_size", "'a'"]),
    ("ragged", lambda s: s([[1.0, 2.0], [3.0]]), ["input 0", "numeric"]),
    ("dict", lambda s: s({"x": 1.0}), ["input 0", "object"]),
    ("no-args", lambda s: s(), ["no argument"]),
    ("predict-text", lambda s: s.predict("a"), ["input 0"]),
]

X, Y = torch.rand(12, 2), torch.rand(12, 1)
PRUNE = [
    ("features", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (torch.rand(12, 3), Y)), ["X has 3 features", "F_in=2"]),
    ("integer-X", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (torch.ones(12, 2, dtype=torch.int64), Y)),
     ["X", "floating", "int64"]),
    ("bool-X", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (np.ones((12, 2), bool), Y)), ["X", "floating"]),
    ("complex-X", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (np.ones((12, 2), complex), Y)), ["X", "complex"]),
    ("text-X", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (np.full((12, 2), "a"), Y)), ["X", "dtype"]),
    ("Y-columns", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (X, torch.rand(12, 3))), ["Y", "(12, 1)", "(12, 3)"]),
    ("rows", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (X, Y[:5])), ["same number of rows", "12", "5"]),
    ("empty", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (X[:0], Y[:0])), ["non-empty", "(0, 2)"]),
    ("nan-X", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (X * math.nan, Y)), ["X", "NaN"]),
    ("3d-X", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (X[None], Y[None])), ["X", "(1, 12, 2)"]),
    ("seed-2**70", lambda t: sciprune.prune(_fresh(), "random", 0.5, seed=2**70), ["seed", "[0, 2**32)"]),
    ("seed-negative", lambda t: sciprune.prune(_fresh(), "random", 0.5, seed=-1), ["seed", "-1"]),
    ("seed-text", lambda t: sciprune.prune(_fresh(), "random", 0.5, seed="a"), ["seed", "'a'"]),
    ("seed-bool", lambda t: sciprune.prune(_fresh(), "random", 0.5, seed=True), ["seed", "True"]),
    ("ratio-nan", lambda t: sciprune.prune(_fresh(), "magnitude", math.nan), ["ratio", "nan"]),
    ("ratio-one", lambda t: sciprune.prune(_fresh(), "magnitude", 1.0), ["ratio", "[0, 1)"]),
    ("ratio-bool", lambda t: sciprune.prune(_fresh(), "magnitude", True), ["ratio", "True"]),
    ("scope", lambda t: sciprune.prune(_fresh(), "magnitude", 0.5, scope="neuron"), ["scope", "neuron"]),
    ("method-unknown", lambda t: sciprune.prune(_fresh(), "no-such-method", 0.5), ["unknown method", "no-such-method"]),
    ("method-list", lambda t: sciprune.prune(_fresh(), ["ec"], 0.5), ["method", "['ec']"]),
    ("method-needs-data", lambda t: sciprune.prune(_fresh(), "ec", 0.5), ["needs data"]),
    ("option-unknown", lambda t: sciprune.prune(_fresh(), "magnitude", 0.5, probes=3), ["unknown option", "probes"]),
    ("compensate-text", lambda t: sciprune.prune(_fresh(), "magnitude", 0.5, (X, Y), compensate="yes"),
     ["compensate", "'yes'"]),
    ("model-none", lambda t: sciprune.prune(None, "magnitude", 0.5), ["model", "NoneType"]),
    ("labels-range", lambda t: sciprune.prune(sciprune.MLP(2, [4], 3, seed=0), "ec", 0.5, (X, torch.full((12,), 7))),
     ["labels", "[0, 3)", "7"]),
    ("batch-size-zero", lambda t: sciprune.prune(_fresh(), "ec", 0.5, (X, Y), batch_size=0), ["batch_size", "0"]),
]

SCORES = [
    ("conv-name", lambda t: sciprune.scores(_fresh(), "magnitude", names=["conv.weight"]),
     ["conv.weight", "not prunable", "linear0.weight"]),
    ("names-str", lambda t: sciprune.scores(_fresh(), "magnitude", names="linear0.weight"), ["names", "list"]),
    ("bias-name", lambda t: sciprune.scores(_fresh(), "magnitude", names=["linear0.bias"]), ["linear0.bias"]),
    ("data-X-only", lambda t: sciprune.scores(_fresh(), "ec", X), ["tuple (X, Y)", "Tensor"]),
    ("batches-not-pairs", lambda t: sciprune.scores(_fresh(), "ec", [X, Y]), ["pair (X, Y)"]),
    ("batch-features", lambda t: sciprune.scores(_fresh(), "ec", [(torch.rand(4, 5), torch.rand(4, 1))]),
     ["X of batch 0", "5 features"]),
    ("plan-compensate", lambda t: sciprune.plan(_fresh(), "magnitude", compensate=1), ["compensate"]),
    ("plan-compensate-no-data", lambda t: sciprune.plan(_fresh(), "magnitude", compensate=True), ["compensate=True", "data"]),
    ("apply-none", lambda t: sciprune.apply_plan(_fresh(), None, 0.5), ["PrunePlan", "NoneType"]),
    ("apply-model-none", lambda t: sciprune.apply_plan(None, sciprune.plan(_fresh(), "magnitude"), 0.5),
     ["model", "NoneType"]),
    ("apply-other-model", lambda t: sciprune.apply_plan(sciprune.MLP(3, [4], 1), sciprune.plan(_fresh(), "magnitude"), 0.5),
     ["does not fit", "linear0.weight"]),
    ("apply-scope", lambda t: sciprune.apply_plan(_fresh(), sciprune.plan(_fresh(), "magnitude"), 0.5, scope="x"),
     ["scope", "'x'"]),
    ("apply-ratio", lambda t: sciprune.apply_plan(_fresh(), sciprune.plan(_fresh(), "magnitude"), "half"),
     ["ratio", "'half'"]),
]

FIT = [
    ("model-none", lambda t: sciprune.fit(None, (X, Y)), ["model", "NoneType"]),
    ("data-none", lambda t: sciprune.fit(_fresh(), None), ["TaskData", "NoneType"]),
    ("features", lambda t: sciprune.fit(_fresh(), (torch.rand(12, 3), Y)), ["X has 3 features"]),
    ("Y-columns", lambda t: sciprune.fit(_fresh(), (X, torch.rand(12, 3))), ["Y", "(12, 3)"]),
    ("integer-X", lambda t: sciprune.fit(_fresh(), (torch.ones(12, 2, dtype=torch.long), Y)), ["X", "floating"]),
    ("labels-range", lambda t: sciprune.fit(sciprune.MLP(2, [4], 3), (X, torch.full((12,), 5))), ["labels", "[5, 5]"]),
    ("labels-negative", lambda t: sciprune.fit(sciprune.MLP(2, [4], 3), (X, torch.full((12,), -1))), ["labels", "-1"]),
    ("labels-2d", lambda t: sciprune.fit(sciprune.MLP(2, [4], 3), (X, torch.zeros(12, 2, dtype=torch.long))),
     ["labels", "(12,)"]),
    ("config-dict", lambda t: sciprune.fit(_fresh(), (X, Y), {"epochs": 1}), ["TrainConfig", "dict"]),
    ("val-not-pair", lambda t: sciprune.fit(_fresh(), (X, Y), val=X), ["val", "tuple"]),
    ("val-features", lambda t: sciprune.fit(_fresh(), (X, Y), val=(torch.rand(4, 3), Y[:4])), ["X_val", "3 features"]),
    ("empty", lambda t: sciprune.fit(_fresh(), (X[:0], Y[:0])), ["non-empty"]),
    ("progress", lambda t: sciprune.fit(_fresh(), (X, Y), progress=3), ["progress", "callable"]),
    ("loss", lambda t: sciprune.fit(_fresh(), (X, Y), loss="l1"), ["loss", "'l1'"]),
]

TRAIN_CONFIG = [
    ("epochs-text", dict(epochs="a"), ["epochs", "'a'"]),
    ("epochs-float", dict(epochs=1.5), ["epochs", "1.5"]),
    ("epochs-huge", dict(epochs=10**30), ["epochs", "10000000"]),
    ("epochs-negative", dict(epochs=-1), ["epochs", "-1"]),
    ("lr-text", dict(lr="a"), ["lr", "'a'"]),
    ("lr-none", dict(lr=None), ["lr", "None"]),
    ("lr-inf", dict(lr=math.inf), ["lr", "inf"]),
    ("lr-zero", dict(lr=0.0), ["lr", "> 0"]),
    ("gamma-nan", dict(gamma=math.nan), ["gamma", "nan"]),
    ("gamma-one", dict(gamma=1.0), ["gamma", "(0, 1)"]),
    ("seed-huge", dict(seed=2**70), ["seed", "4294967295"]),
    ("seed-negative", dict(seed=-1), ["seed", "-1"]),
    ("batch-text", dict(batch_size="x"), ["batch_size", "'x'"]),
    ("batch-zero", dict(batch_size=0), ["batch_size", "0"]),
    ("weight-decay-text", dict(weight_decay="x"), ["weight_decay", "'x'"]),
    ("momentum-negative", dict(momentum=-0.1), ["momentum", "-0.1"]),
    ("patience-zero", dict(patience=0), ["patience", "0"]),
    ("optimizer", dict(optimizer="rmsprop"), ["optimizer", "rmsprop"]),
    ("lr_schedule", dict(lr_schedule="warmup"), ["lr_schedule", "warmup"]),
    ("schedule-renamed", dict(schedule="cosine"), ["renamed lr_schedule"]),
]

MASKS = [
    ("shape", lambda t: sciprune.set_masks(_fresh(), {"linear0.weight": torch.ones(3, 3, dtype=torch.bool)}),
     ["linear0.weight", "(3, 3)", "(4, 2)"]),
    ("unknown", lambda t: sciprune.set_masks(_fresh(), {"conv.weight": torch.ones(3, dtype=torch.bool)}),
     ["conv.weight", "linear0.weight"]),
    ("masks-none", lambda t: sciprune.set_masks(_fresh(), None), ["masks", "dict", "NoneType"]),
    ("masks-list", lambda t: sciprune.set_masks(_fresh(), [1]), ["masks", "list"]),
    ("value-text", lambda t: sciprune.set_masks(_fresh(), {"linear0.weight": "x"}), ["linear0.weight", "str"]),
    ("value-half", lambda t: sciprune.set_masks(_fresh(), {"linear0.weight": torch.full((4, 2), 0.5)}),
     ["linear0.weight", "0 and 1"]),
    ("value-nan", lambda t: sciprune.set_masks(_fresh(), {"linear0.weight": torch.full((4, 2), math.nan)}),
     ["linear0.weight", "0 and 1"]),
    ("key-int", lambda t: sciprune.set_masks(_fresh(), {1: torch.ones(1)}), ["names", "1"]),
    ("model-none", lambda t: sciprune.set_masks(None, {}), ["model", "NoneType"]),
    ("get-conv", lambda t: sciprune.get_masks(_fresh(), names=["conv.weight"]), ["conv.weight"]),
    ("get-names-str", lambda t: sciprune.get_masks(_fresh(), names="linear0.weight"), ["names", "list"]),
    ("get-model-none", lambda t: sciprune.get_masks(None), ["model", "NoneType"]),
    ("sparsity-none", lambda t: sciprune.sparsity(None), ["model", "NoneType"]),
    ("masked-step-none", lambda t: sciprune.MaskedStep(None, _fresh()), ["optimizer", "NoneType"]),
    ("compact-none", lambda t: sciprune.compact(None), ["model", "NoneType"]),
]

MODELS = [
    ("mlp-huge", lambda t: sciprune.MLP(2, [4000000000], 1), ["4000000000", "GiB"]),
    ("mlp-zero", lambda t: sciprune.MLP(2, [0], 1), ["positive"]),
    ("mlp-activation", lambda t: sciprune.MLP(2, [4], 1, "swish"), ["activation", "swish"]),
    ("build-activation", lambda t: sciprune.build_model({"kind": "mlp", "sizes": [2, 1], "activation": "x"}),
     ["activation"]),
    ("build-kind", lambda t: sciprune.build_model({"kind": "cnn", "sizes": [2, 1]}), ["kind", "cnn"]),
    ("surrogate-none", lambda t: sciprune.Surrogate(None), ["nn.Sequential", "NoneType"]),
    ("surrogate-batch", lambda t: sciprune.Surrogate(_fresh(), batch_size=0), ["batch_size"]),
    ("surrogate-scaling-inf", lambda t: sciprune.Surrogate(_fresh(), output_scaling=Scaling([math.inf], [1.0])),
     ["shift", "finite"]),
]

# Entry points of models.py and compaction.py.
MODEL_CASES = [
    ("mlp-widths-none", lambda t: sciprune.MLP(2, None, 1), ["widths"]),
    ("mlp-seed-huge", lambda t: sciprune.MLP(2, [4], 1, seed=2**70), ["seed"]),
    ("build-none", lambda t: sciprune.build_model(None), ["spec"]),
    ("build-no-sizes", lambda t: sciprune.build_model({"kind": "mlp"}), ["sizes"]),
    ("compact-linear", lambda t: sciprune.compact(torch.nn.Linear(2, 1)), ["Sequential"]),
]

CASES = [pytest.param(fn, needles, id=f"{group}-{name}")
         for group, cases in [("load", LOAD), ("save", SAVE), ("prune", PRUNE), ("scores", SCORES), ("fit", FIT),
                              ("masks", MASKS), ("models", MODELS)]
         for name, fn, needles in cases]


@pytest.mark.parametrize("fn,needles", CASES)
def test_entry_point_raises_one_line_user_error(tiny, fn, needles):
    before = snapshot(tiny.dir)
    assert_raises_user_error(lambda: fn(tiny), *needles)
    assert snapshot(tiny.dir) == before  # nothing written, no temporary left


@pytest.mark.parametrize("fn,needles", [pytest.param(fn, n, id=name) for name, fn, n in CALL])
def test_surrogate_call_refuses_bad_inputs(tiny, fn, needles):
    s = sciprune.load(tiny.path)
    assert_raises_user_error(lambda: fn(s), *needles)


@pytest.mark.parametrize("kwargs,needles", [pytest.param(k, n, id=name) for name, k, n in TRAIN_CONFIG])
def test_train_config_refuses_bad_values(kwargs, needles):
    assert_raises_user_error(lambda: sciprune.TrainConfig(**kwargs), *needles)


@pytest.mark.parametrize("fn,needles", [pytest.param(fn, n, id=name) for name, fn, n in MODEL_CASES])
def test_model_entry_points_refuse_bad_inputs(tiny, fn, needles):
    assert_raises_user_error(lambda: fn(tiny), *needles)


def test_labels_of_one_column_regression_are_read_as_a_column():
    """Y shaped (N,) for a one-output regressor is one column, not broadcast against (N, 1)."""
    m1, m2 = _fresh(), _fresh()
    sciprune.fit(m1, (X, Y[:, 0]), sciprune.TrainConfig(epochs=2))
    sciprune.fit(m2, (X, Y), sciprune.TrainConfig(epochs=2))
    assert all(torch.equal(a, b) for a, b in zip(m1.parameters(), m2.parameters()))


# --------------------------------------------------------------------------- disk full
@pytest.fixture
def tiny_disk(tmp_path):
    with tmpfs(tmp_path / "disk") as d:
        yield d


def test_save_on_a_full_disk_leaves_nothing(tiny_disk):
    big = sciprune.MLP(2, [128, 128], 1, seed=0)  # ~70 kB of weights, more than the 64 kB disk
    assert_raises_user_error(lambda: sciprune.save(big, tiny_disk / "m.sciprune"), "m.sciprune", "nothing was written")
    assert sorted(Path(tiny_disk).iterdir()) == []


def test_save_on_a_full_disk_keeps_the_previous_model(tiny_disk):
    small = sciprune.MLP(2, [4], 1, seed=0)
    path = sciprune.save(small, tiny_disk / "m.sciprune")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    big = sciprune.MLP(2, [128, 128], 1, seed=0)
    assert_raises_user_error(lambda: sciprune.save(big, path), "nothing was written")
    assert [p.name for p in Path(tiny_disk).iterdir()] == ["m.sciprune"]
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before


# --------------------------------------------------------------------------- arrays where names are expected
ARRAY = np.full((2, 2), np.nan)
TENSOR = torch.zeros(3, 3)


@pytest.mark.parametrize("fn,needles", [
    pytest.param(lambda: sciprune.prune(_fresh(), "magnitude", 0.5, (X, Y), scope=ARRAY), ["scope"], id="scope-array"),
    pytest.param(lambda: sciprune.TrainConfig(optimizer=ARRAY), ["optimizer"], id="optimizer-array"),
    pytest.param(lambda: sciprune.TrainConfig(lr_schedule=ARRAY), ["lr_schedule"], id="lr-schedule-array"),
    pytest.param(lambda: sciprune.TrainConfig(lr=TENSOR), ["lr", "tensor"], id="lr-tensor"),
    pytest.param(lambda: sciprune.MLP(2, [4], 1, TENSOR), ["activation"], id="activation-tensor"),
    pytest.param(lambda: sciprune.prune(_fresh(), TENSOR, 0.5, (X, Y)), ["method"], id="method-tensor"),
    pytest.param(lambda: sciprune.prune(_fresh(), "magnitude", TENSOR, (X, Y)), ["ratio"], id="ratio-tensor"),
])
def test_array_values_give_one_line_errors(fn, needles):
    """A tensor or array where a name or number is expected: refused without being compared (numpy's
    ambiguous truth value), and its multi-line repr folded into the one-line message."""
    msg = assert_raises_user_error(fn, *needles)
    assert len(msg) <= 2000


def test_long_messages_are_cut_in_the_middle():
    from sciprune.errors import SciPruneError

    msg = str(SciPruneError("start " + "x\n" * 5000 + " end"))
    assert "\n" not in msg and len(msg) <= 2000 and msg.startswith("start") and msg.endswith("end")
