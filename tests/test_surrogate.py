"""Saving and loading a pruned surrogate: round trips, the on-disk format, atomic writes, errors."""

from __future__ import annotations

import json
import re
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from torch import nn

import sciprune
from sciprune import surrogate as sur
from sciprune.errors import DataFormatError, SciPruneError
from sciprune.masks import get_masks, set_masks
from sciprune.models import MLP
from sciprune.scaling import Scaling

IN_S = Scaling([0.5, 10.0], [0.5, 10.0])  # x in [0, 1], t in [0, 20]
OUT_S = Scaling([2.0], [3.0])
PROV = {"method": "magnitude", "ratio": np.float64(0.75), "seed": np.int64(7),
        "dataset": {"file": Path("data/diffsorp.h5"), "sample": 0, "noise": {"kind": "gaussian", "sigma": 0.01}}}


def pruned_mlp(dtype=torch.float32, seed=0, widths=(16, 16), n_in=2, n_out=1, activation="tanh") -> MLP:
    model = MLP(n_in, list(widths), n_out, activation, seed=seed).to(dtype)
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(p.shape, generator=g) > 0.75 for n, p in model.named_parameters() if n.endswith("weight")}
    set_masks(model, masks)
    return model


def points(n=50, seed=1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.c_[rng.uniform(0, 1, n), rng.uniform(0, 20, n)]


def save_default(model, path, **kw):
    kw = {"input_scaling": IN_S, "output_scaling": OUT_S, "provenance": PROV, "input_names": ["x", "t"],
          "output_names": ["u"], **kw}
    return sciprune.save(model, path, **kw)


def in_memory(model, **kw) -> sur.Surrogate:
    return sur.Surrogate(model, **{"input_scaling": IN_S, "output_scaling": OUT_S, **kw})


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_round_trip_is_bitwise_identical(tmp_path, dtype):
    model = pruned_mlp(dtype)
    path = save_default(model, tmp_path / "model.sciprune")
    s = sciprune.load(path)
    assert path == tmp_path / "model.sciprune" and listing(path) == ["model.json", "weights.safetensors"]
    assert not s.model.training and s.dtype == dtype and s.task == "regression"
    X = points()
    np.testing.assert_array_equal(s(X), in_memory(model)(X))
    for (k, a), (k2, b) in zip(model.state_dict().items(), s.model.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and torch.equal(a, b)
    got, want = get_masks(s.model), get_masks(model)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert all(s.model.get_submodule(f"linear{i}").weight_mask is not None for i in range(3))
    assert s.metadata["provenance"]["ratio"] == 0.75 and s.metadata["provenance"]["seed"] == 7
    assert s.metadata["provenance"]["dataset"]["file"] == "data/diffsorp.h5"
    assert s.input_names == ["x", "t"] and s.output_names == ["u"]
    assert "method='magnitude'" in repr(s) and "ratio=0.75" in repr(s) and "2-16-16-1" in repr(s)


def test_fresh_process_gives_identical_outputs(tmp_path):
    model = pruned_mlp()
    path = save_default(model, tmp_path / "model.sciprune")
    X = points(200)
    np.save(tmp_path / "X.npy", X)
    code = textwrap.dedent(f"""
        import numpy as np, sciprune
        s = sciprune.load({str(path)!r})
        np.save({str(tmp_path / "Y.npy")!r}, s(np.load({str(tmp_path / "X.npy")!r})))
    """)
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "Y.npy"), in_memory(model)(X))


def test_weights_file_is_safetensors_without_pickle(tmp_path):
    model = pruned_mlp()
    path = save_default(model, tmp_path / "m")
    raw = (path / "weights.safetensors").read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])  # a plain JSON header, then raw tensor bytes: no pickle anywhere
    assert not raw.startswith(b"\x80") and b"PK\x03\x04" not in raw[:8]
    assert header.pop("__metadata__") == {"format": "sciprune-surrogate", "format_version": "1"}
    masks = [f"mask/linear{i}.weight" for i in range(3)]
    assert set(header) == set(model.state_dict()) | set(masks)
    assert {header[k]["dtype"] for k in masks} == {"U8"} and header["linear0.weight"]["dtype"] == "F32"
    tensors = safetensors.torch.load(raw)
    for k in masks:
        assert torch.equal(tensors[k].bool(), get_masks(model)[k.removeprefix("mask/")])
    meta = json.loads((path / "model.json").read_text())
    assert meta["format"] == "sciprune-surrogate" and meta["format_version"] == 1
    assert meta["architecture"] == {"kind": "mlp", "sizes": [2, 16, 16, 1], "activation": "tanh"}
    assert meta["dtype"] == "float32" and meta["input_scaling"] == IN_S.to_dict()
    assert meta["masks"]["linear1.weight"]["kept"] == int(get_masks(model)["linear1.weight"].sum())
    assert meta["versions"]["torch"] == torch.__version__ and "sha256" in meta["weights"]


def test_unmasked_model_saves_without_mask_tensors(tmp_path):
    model = MLP(3, [5], 2, "relu", seed=3)
    s = sciprune.load(sciprune.save(model, tmp_path / "m"))
    assert not any(k.endswith("_mask") for m in s.model.modules() for k in m._buffers)
    X = np.random.default_rng(0).normal(size=(7, 3))
    np.testing.assert_array_equal(s(X), sur.Surrogate(model)(X))


def test_call_applies_scalings_in_physical_units(tmp_path):
    model = pruned_mlp()
    s = sciprune.load(save_default(model, tmp_path / "m"))
    X = points()
    with torch.no_grad():
        z = model(torch.from_numpy(IN_S.forward(X)).float()).double().numpy()
    np.testing.assert_array_equal(s(X), OUT_S.inverse(z))
    assert s(X).dtype == np.float64 and s(X).shape == (50, 1)
    np.testing.assert_array_equal(s(X[0]), s(X)[0])  # one point (F_in,) -> (F_out,)
    np.testing.assert_array_equal(s(X.tolist()), s(X))
    np.testing.assert_array_equal(s(X, batch_size=7), s(X))
    assert s(np.empty((0, 2))).shape == (0, 1)


def test_classification_probabilities_and_predict(tmp_path):
    model = pruned_mlp(n_in=4, n_out=3, activation="relu")
    s = sciprune.load(sciprune.save(model, tmp_path / "c", task="classification", class_names=["a", "b", "c"],
                                    input_scaling=Scaling.identity(4)))
    X = np.random.default_rng(0).normal(size=(40, 4))
    p = s(X)
    assert p.shape == (40, 3) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(p >= 0)
    labels = s.predict(X)
    assert labels.dtype == np.int64 and labels.shape == (40,)
    np.testing.assert_array_equal(labels, p.argmax(axis=1))
    assert s.class_names == ["a", "b", "c"] and s.task == "classification"
    with pytest.raises(SciPruneError, match="output_scaling"):
        sciprune.save(model, tmp_path / "d", task="classification", output_scaling=Scaling.identity(3))


def test_broadcast_coordinate_call(tmp_path):
    s = sciprune.load(save_default(pruned_mlp(), tmp_path / "m"))
    x, t = np.linspace(0, 1, 7), np.linspace(0, 20, 4)[:, None]
    u = s(x, t)
    assert u.shape == (4, 7)
    xx, tt = np.broadcast_arrays(x, t)
    np.testing.assert_array_equal(u, s(np.c_[xx.ravel(), tt.ravel()]).reshape(4, 7))
    assert s(0.5, 3.0).shape == ()
    s2 = sur.Surrogate(pruned_mlp(n_in=1, n_out=2))  # a 1-D coordinate network u(x) with two outputs
    assert s2(np.linspace(0, 1, 5)).shape == (5, 2) and s2(np.zeros((5, 1))).shape == (5, 2)


def test_failed_write_leaves_existing_model_untouched(tmp_path, monkeypatch):
    path = save_default(pruned_mlp(seed=0), tmp_path / "model.sciprune")
    before = {f: (path / f).read_bytes() for f in listing(path)}

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(safetensors.torch, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        save_default(pruned_mlp(seed=1), path)
    monkeypatch.undo()
    # fail later: weights already written in the temporary directory, then the JSON write fails
    real_write = sur._write_file
    monkeypatch.setattr(sur, "_write_file", lambda p, d: boom() if p.name == "model.json" else real_write(p, d))
    with pytest.raises(RuntimeError, match="disk full"):
        save_default(pruned_mlp(seed=1), path)
    monkeypatch.undo()
    # fail at the final rename: the previous model is put back
    real_rename = os.rename
    monkeypatch.setattr(sur.os, "rename", lambda a, b: boom() if Path(b) == path and ".tmp-" in str(a) else real_rename(a, b))
    with pytest.raises(RuntimeError, match="disk full"):
        save_default(pruned_mlp(seed=1), path)
    monkeypatch.undo()
    assert listing(tmp_path) == ["model.sciprune"]  # no temporary or set-aside directory left
    assert {f: (path / f).read_bytes() for f in listing(path)} == before
    X = points()
    np.testing.assert_array_equal(sciprune.load(path)(X), in_memory(pruned_mlp(seed=0))(X))


def test_overwrite_replaces_model(tmp_path):
    path = save_default(pruned_mlp(seed=0), tmp_path / "runs" / "x" / "model.sciprune")
    new = pruned_mlp(seed=5, widths=(8,))
    save_default(new, path)
    s = sciprune.load(path)
    assert s.metadata["architecture"]["sizes"] == [2, 8, 1] and listing(path.parent) == ["model.sciprune"]
    np.testing.assert_array_equal(s(points()), in_memory(new)(points()))
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "study.nc").write_text("keep me")
    with pytest.raises(SciPruneError, match="study.nc"):
        save_default(new, tmp_path / "results")
    assert (tmp_path / "results" / "study.nc").read_text() == "keep me"


def test_hand_built_chain_saves_under_canonical_keys(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 6), nn.GELU(), nn.Linear(6, 1))
    set_masks(model, {"0.weight": torch.arange(12).reshape(6, 2) % 3 > 0})
    s = sciprune.load(sciprune.save(model, tmp_path / "m"))
    assert set(s.model.state_dict()) == {"linear0.weight", "linear0.bias", "linear1.weight", "linear1.bias"}
    assert torch.equal(get_masks(s.model)["linear0.weight"], get_masks(model)["0.weight"])
    X = points()
    np.testing.assert_array_equal(s(X), sur.Surrogate(model)(X))


def test_unsaveable_models_and_arguments_are_refused(tmp_path):
    sine = MLP(2, [4], 1, "sin", seed=0)
    sine.act0.w0 = 30.0
    with pytest.raises(SciPruneError, match="w0=30.0"):
        sciprune.save(sine, tmp_path / "a")
    with pytest.raises(SciPruneError, match="no bias"):
        sciprune.save(nn.Sequential(nn.Linear(2, 3, bias=False), nn.Tanh(), nn.Linear(3, 1)), tmp_path / "b")
    with pytest.raises(SciPruneError, match="input_scaling has 1 features"):
        sciprune.save(pruned_mlp(), tmp_path / "c", input_scaling=Scaling.identity(1))
    with pytest.raises(SciPruneError, match=r"provenance\['dataset'\]\['obj'\].*object"):
        sciprune.save(pruned_mlp(), tmp_path / "d", provenance={"dataset": {"obj": object()}})
    model = pruned_mlp()
    with torch.no_grad():
        model.linear0.weight.fill_(1.0)  # pruned weights revived without enforce()
    with pytest.raises(SciPruneError, match="enforce"):
        sciprune.save(model, tmp_path / "e")
    assert listing(tmp_path) == []
    meta = json.loads((sciprune.save(pruned_mlp(), tmp_path / "f", provenance={"loss": float("nan")}) / "model.json").read_text())
    assert meta["provenance"]["loss"] == "nan"


def test_bad_files_raise_data_format_errors_naming_the_path(tmp_path):
    path = save_default(pruned_mlp(), tmp_path / "m")
    missing = tmp_path / "nowhere.sciprune"
    with pytest.raises(DataFormatError, match=re.escape(str(missing))):
        sciprune.load(missing)
    jfile, wfile = path / "model.json", path / "weights.safetensors"
    good_json, good_w = jfile.read_text(), wfile.read_bytes()

    jfile.write_text(good_json[:-20])
    with pytest.raises(DataFormatError, match=re.escape(str(jfile)) + ".*not valid JSON"):
        sciprune.load(path)
    for key, value in [("format_version", 99), ("weights", None), ("architecture", None)]:
        meta = json.loads(good_json)
        if value is None:
            del meta[key]
        else:
            meta[key] = value
        jfile.write_text(json.dumps(meta))
        with pytest.raises(DataFormatError, match=re.escape(str(jfile)) + f".*'{key}'"):
            sciprune.load(path)
    jfile.write_text(good_json)

    flipped = bytearray(good_w)
    flipped[-3] ^= 0xFF
    wfile.write_bytes(bytes(flipped))
    with pytest.raises(DataFormatError, match=re.escape(f"checksum mismatch for {wfile}")):
        sciprune.load(path)
    wfile.unlink()
    with pytest.raises(DataFormatError, match=re.escape(str(wfile))):
        sciprune.load(path)
    wfile.write_bytes(good_w)

    s = sciprune.load(jfile)  # the model.json path works too
    with pytest.raises(SciPruneError, match=r"F_in=2 input features \(x, t\).*shape \(5, 3\)"):
        s(np.zeros((5, 3)))
    with pytest.raises(SciPruneError, match="F_in=2.*3 coordinate arrays"):
        s(np.zeros(3), np.zeros(3), np.zeros(3))
    with pytest.raises(SciPruneError, match="numeric"):
        s(np.array(["a", "b"]))


def test_saving_twice_gives_byte_identical_files(tmp_path):
    """docs/api_surrogate.md: the same surrogate saved twice (to two paths, or over itself) is the same bytes."""
    import safetensors

    from sciprune.scaling import Scaling

    model = sciprune.MLP(2, [6, 5], 1, seed=3)
    sciprune.prune(model, "magnitude", 0.4)
    kwargs = dict(input_scaling=Scaling(np.array([0.1, 2.0]), np.array([3.0, 0.5])),
                  output_scaling=Scaling(np.array([1.5]), np.array([0.25])), input_names=["x", "t"],
                  provenance={"z": 1, "a": {"y": [1, 2], "b": "c"}, "m": 0.5})
    a = sciprune.save(model, tmp_path / "a.sciprune", **kwargs)
    b = sciprune.save(model, tmp_path / "b.sciprune", **kwargs)
    first = {p.name: p.read_bytes() for p in a.iterdir()}
    assert sorted(first) == ["model.json", "weights.safetensors"]
    assert first == {p.name: p.read_bytes() for p in b.iterdir()}
    sciprune.save(model, a, **kwargs)
    assert first == {p.name: p.read_bytes() for p in a.iterdir()}
    with safetensors.safe_open(a / "weights.safetensors", "pt") as f:
        assert f.metadata() == {"format": "sciprune-surrogate", "format_version": "1"}
    assert sciprune.load(a).model.linear0.weight.equal(model.linear0.weight)
