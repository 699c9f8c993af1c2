"""Malformed options and inputs to train / prune / evaluate / diagnose / methods, run in-process.

Every case: exit code 2, one ``Error:`` line naming the option, key or file, no traceback, and the
output folder exactly as before (no partial or temporary file). One tiny PDEBench file and one tiny
trained model are shared by the module.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from malformed import assert_user_error, invoke, snapshot, tmpfs


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    data = d / "ds.h5"
    res = invoke(["generate", "diffusion-sorption", "--out", data, "--nx", "16", "--nt", "5", "--workers", "1"])
    assert res.exit_code == 0, res.output
    model = d / "m.sciprune"
    res = invoke(["train", "--data", data, "--widths", "4", "--activation", "relu", "--epochs", "3", "--lr", "0.01",
                  "--out", model])
    assert res.exit_code == 0, res.output
    other = d / "o.sciprune"
    res = invoke(["prune", model, "--method", "magnitude", "--ratio", "0.5", "--out", other])
    assert res.exit_code == 0, res.output
    return SimpleNamespace(dir=d, data=data, model=model, other=other)


def _out(env, name="out"):
    """A fresh output folder inside a watched folder, and the snapshot of that folder."""
    root = env.dir / "runs"
    root.mkdir(exist_ok=True)
    return root / name, snapshot(root), root


def _run(env, args, *needles, out=None):
    dest, before, root = _out(env)
    args = [a if a != "OUT" else dest for a in args]
    return assert_user_error(invoke([str(a).replace("{m}", str(env.model)).replace("{o}", str(env.other))
                                     .replace("{d}", str(env.data)) for a in args]),
                             *needles, watch=(root,), before=before)


TRAIN = [
    (["--device", "tpu"], ["device", "'tpu'"]),
    (["--device", "cuda:x"], ["device", "cuda:x"]),
    (["--device", ""], ["device"]),
    (["--device", "cpu:0"], ["device", "cpu:0"]),
    (["--seed", "-1"], ["--seed", "-1"]),
    (["--seed", str(2**32)], ["--seed", str(2**32)]),
    (["--seed", "abc"], ["--seed", "abc"]),
    (["--epochs", "-1"], ["--epochs", "-1"]),
    (["--epochs", str(10**8)], ["--epochs", str(10**8)]),
    (["--epochs", "many"], ["--epochs"]),
    (["--lr", "0"], ["--lr"]),
    (["--lr", "nan"], ["--lr", "nan"]),
    (["--lr", "inf"], ["--lr", "inf"]),
    (["--lr", "-1"], ["--lr", "-1"]),
    (["--batch-size", "0"], ["--batch-size", "0"]),
    (["--patience", "0"], ["--patience", "0"]),
    (["--widths", "4000000000"], ["4000000000", "GiB"]),
    (["--widths", "0"], ["--widths", "greater than or equal to 1", "got 0"]),
    (["--widths", "a,b"], ["--widths", "a,b"]),
    (["--noise-level", "nan"], ["--noise-level", "nan"]),
    (["--noise-level", "-1"], ["--noise-level", "-1"]),
    (["--noise-level", "inf"], ["--noise-level", "inf"]),
    (["--noise-level", "1e300"], ["--noise-level", "1e+300"]),
    (["--sample", "-1"], ["--sample", "-1"]),
    (["--sample", "7"], ["sample"]),
    (["--split", "diagonal"], ["--split", "diagonal"]),
    (["--activation", "swish"], ["--activation", "swish"]),
    (["--optimizer", "rmsprop"], ["--optimizer", "rmsprop"]),
    (["--schedule", "warmup"], ["--schedule", "warmup"]),
    (["--lr-schedule", "warmup"], ["--lr-schedule", "warmup"]),
    (["--model", "cnn"], ["--model", "cnn"]),
]


@pytest.mark.parametrize("extra,needles", TRAIN, ids=[" ".join(a) for a, _ in TRAIN])
def test_train_refuses_bad_options(env, extra, needles):
    _run(env, ["train", "--data", "{d}", "--widths", "4", "--epochs", "1", *extra, "--out", "OUT"], *needles)


def test_train_missing_data_file(env):
    _run(env, ["train", "--data", str(env.dir / "none.h5"), "--epochs", "1", "--out", "OUT"], "none.h5")


PRUNE = [
    (["--ratio", "1.5"], ["ratio", "[0, 1)"]),
    (["--ratio", "nan"], ["ratio", "nan"]),
    (["--ratio", "-0.1"], ["ratio", "-0.1"]),
    (["--method", "no-such-method"], ["unknown method", "no-such-method"]),
    (["--seed", "-1"], ["--seed", "-1"]),
    (["--seed", str(2**32)], ["--seed"]),
    (["--device", "tpu"], ["device", "tpu"]),
    (["--device", "gpu"], ["device", "gpu"]),
    (["--finetune-epochs", "-1"], ["--finetune-epochs", "-1"]),
    (["--finetune-epochs", str(10**8)], ["--finetune-epochs"]),
    (["--finetune-epochs", "1", "--lr", "nan"], ["--lr", "nan"]),
    (["--finetune-epochs", "1", "--lr", "0"], ["--lr"]),
    (["--scope", "neuron"], ["--scope", "neuron"]),
]


@pytest.mark.parametrize("extra,needles", PRUNE, ids=[" ".join(a) for a, _ in PRUNE])
def test_prune_refuses_bad_options(env, extra, needles):
    base = {k: v for k, v in {"--method": "magnitude", "--ratio": "0.5"}.items() if k not in extra}
    args = [x for kv in base.items() for x in kv]
    _run(env, ["prune", "{m}", *args, *extra, "--out", "OUT"], *needles)


# ------------------------------------------------------------------------- damaged or changed models
def _damaged(env, tmp_path, edit) -> Path:
    bad = tmp_path / "bad.sciprune"
    shutil.copytree(env.model, bad)
    meta = json.loads((bad / "model.json").read_text())
    edit(meta)
    (bad / "model.json").write_text(json.dumps(meta))
    return bad


def _shift(meta, by=5.0):
    meta["output_scaling"]["shift"][0] += by


DAMAGE = [
    ("nan-shift", lambda m: m["output_scaling"].update(shift=[math.nan]), ["output_scaling.shift.0", "finite"]),
    ("inf-scale", lambda m: m["input_scaling"].update(scale=[1.0, math.inf]), ["input_scaling.scale.1", "finite"]),
    ("sizes-huge", lambda m: m["architecture"].update(sizes=[2, 4000000000, 1]), ["architecture.sizes", "GiB"]),
    ("arch-list", lambda m: m.update(architecture=[2, 4, 1]), ["architecture", "object"]),
    ("no-task", lambda m: m.pop("task"), ["task", "missing"]),
    ("provenance-data-list", lambda m: m["provenance"].update(data=[1]), ["provenance.data"]),
    ("provenance-seed", lambda m: m["provenance"].update(seed=-3), ["provenance.seed", "-3"]),
    ("provenance-noise", lambda m: m["provenance"].update(noise={"kind": "uniform", "level": -1.0}),
     ["provenance.noise"]),
    ("provenance-data-key", lambda m: m["provenance"]["data"].update(colour="red"), ["provenance.data", "colour"]),
    ("shifted-scaling", _shift, ["output_scaling", "differs", "--rescale-data"]),
]


@pytest.mark.parametrize("command", ["evaluate", "prune", "hessian", "psp"])
@pytest.mark.parametrize("name,edit,needles", DAMAGE, ids=[c[0] for c in DAMAGE])
def test_damaged_model_json_is_one_line(env, tmp_path, command, name, edit, needles):
    bad = _damaged(env, tmp_path, edit)
    args = {"evaluate": ["evaluate", bad],
            "prune": ["prune", bad, "--method", "magnitude", "--ratio", "0.5", "--out", "OUT"],
            "hessian": ["diagnose", "hessian", bad, "--out", "OUT"],
            "psp": ["diagnose", "psp", bad, "--out", "OUT"]}[command]
    _run(env, args, *needles)


def test_changed_data_file_is_named(env, tmp_path):
    """The data the model was trained on changed in place: its hash no longer matches; exit 2."""
    data = tmp_path / "ds.h5"
    shutil.copy(env.data, data)
    model = tmp_path / "m.sciprune"
    res = invoke(["train", "--data", data, "--widths", "4", "--epochs", "1", "--out", model])
    assert res.exit_code == 0, res.output
    import h5py

    with h5py.File(data, "r+") as f:
        key = sorted(f)[0]
        f[key]["data"][...] = f[key]["data"][...] * 2
    _run(env, ["evaluate", model], "data_sha256", "--rescale-data")
    res = invoke(["evaluate", model, "--rescale-data"])
    assert res.exit_code == 0, res.output


EVALUATE = [
    (["evaluate", "{m}", "--device", "tpu"], ["device", "tpu"]),
    (["evaluate", "{m}", "--device", "cuda:1x"], ["device", "cuda:1x"]),
    (["evaluate", "NOPE"], ["nope.sciprune", "does not exist"]),
    (["evaluate", "{d}"], ["ds.h5", "is a file"]),
]


@pytest.mark.parametrize("args,needles", EVALUATE, ids=[" ".join(a[1:]) for a, _ in EVALUATE])
def test_evaluate_refuses_bad_input(env, args, needles):
    _run(env, [a if a != "NOPE" else str(env.dir / "nope.sciprune") for a in args], *needles)


DIAGNOSE = [
    (["hessian", "{m}", "--k", "0"], ["--k", "0"]),
    (["hessian", "{m}", "--tol", "0"], ["--tol"]),
    (["hessian", "{m}", "--tol", "nan"], ["--tol", "nan"]),
    (["hessian", "{m}", "--tol", "2"], ["--tol", "2"]),
    (["hessian", "{m}", "--trace-samples", "-1"], ["--trace-samples", "-1"]),
    (["hessian", "{m}", "--layers", "conv"], ["--layers", "conv"]),
    (["hessian", "{m}", "--max-points", "0"], ["--max-points", "0"]),
    (["hessian", "{m}", "--seed", "-1"], ["--seed", "-1"]),
    (["hessian", "{m}", "--seed", str(2**40)], ["--seed"]),
    (["hessian", "{m}", "--device", "tpu"], ["device", "tpu"]),
    (["hessian", "{m}", "--sample", "-1"], ["--sample", "-1"]),
    (["psp", "{m}", "--bins", "0"], ["--bins", "0"]),
    (["psp", "{m}", "--order", "3"], ["--order", "3"]),
    (["psp", "{m}", "--device", "cuda:"], ["device", "cuda:"]),
    (["landscape", "{m}", "{o}", "--points", "1"], ["--points", "1"]),
    (["landscape", "{m}", "{o}", "--grid", "3"], ["--grid", "'3'"]),
    (["landscape", "{m}", "{o}", "--grid", "1,3"], ["alpha", "1"]),
    (["landscape", "{m}", "{o}", "--grid", "3,3", "--alpha-span", "0.5,1.5"], ["alpha span", "0.5"]),
    (["landscape", "{m}", "{o}", "--grid", "3,3", "--beta-span", "nan,1"], ["beta span", "nan"]),
    (["landscape", "{m}", "{o}", "--grid", "3,3", "--alpha-span", "-inf,2"], ["alpha span", "inf"]),
    (["landscape", "{m}", "{o}", "--grid", "3,3", "--alpha-span", "x"], ["--alpha-span", "'x'"]),
    (["landscape", "{m}", "{o}", "--grid", "2000,2000"], ["more than"]),
    (["landscape", "{m}", "{m}", "--points", "3", "--grid", "3,3"], ["identical"]),
    (["landscape", "{m}", "{o}", "--device", "tpu"], ["device", "tpu"]),
    (["landscape", "{m}", "NOPE", "--points", "3"], ["nope.sciprune"]),
]


@pytest.mark.parametrize("args,needles", DIAGNOSE, ids=[" ".join(a[:1] + a[2:]).replace("{o}", "B") for a, _ in DIAGNOSE])
def test_diagnose_validates_before_writing(env, args, needles):
    args = [a if a != "NOPE" else str(env.dir / "nope.sciprune") for a in args]
    _run(env, ["diagnose", *args, "--out", "OUT"], *needles)


def test_diagnose_psp_on_a_tanh_model_writes_nothing(env, tmp_path):
    tanh = tmp_path / "t.sciprune"
    res = invoke(["train", "--data", env.data, "--widths", "4", "--epochs", "1", "--out", tanh])
    assert res.exit_code == 0, res.output
    _run(env, ["diagnose", "psp", tanh, "--out", "OUT"], "ReLU")


# ------------------------------------------------------------------------- output paths (item 7)
def _a_file(env) -> Path:
    f = env.dir / "runs" / "plain.txt"
    f.parent.mkdir(exist_ok=True)
    f.write_text("x")
    return f


WRITERS = {
    "train": lambda out: ["train", "--data", "{d}", "--widths", "4", "--epochs", "1", "--out", out],
    "prune": lambda out: ["prune", "{m}", "--method", "magnitude", "--ratio", "0.5", "--out", out],
    "hessian": lambda out: ["diagnose", "hessian", "{m}", "--k", "1", "--out", out],
    "landscape": lambda out: ["diagnose", "landscape", "{m}", "{o}", "--points", "3", "--grid", "0,0", "--out", out],
}


@pytest.mark.parametrize("command", list(WRITERS))
def test_output_under_a_file_is_refused(env, command):
    f = _a_file(env)
    _run(env, WRITERS[command](f / "sub" / "x.sciprune"), "plain.txt", "not a folder")


@pytest.mark.parametrize("command", ["train", "prune"])
def test_model_output_over_a_foreign_folder_is_refused(env, command):
    foreign = env.dir / "runs" / "foreign"
    foreign.mkdir(parents=True, exist_ok=True)
    (foreign / "notes.txt").write_text("keep me")
    _run(env, WRITERS[command](foreign), "foreign", "notes.txt")


@pytest.mark.parametrize("command", ["hessian", "landscape"])
def test_diagnose_output_that_is_a_file_is_refused(env, command):
    _run(env, WRITERS[command](_a_file(env)), "plain.txt", "is a file")


@pytest.mark.parametrize("command", list(WRITERS))
def test_missing_parents_are_created(env, tmp_path, command):
    out = tmp_path / "a" / "b" / ("x.sciprune" if command in ("train", "prune") else "diag")
    args = [str(a).replace("{m}", str(env.model)).replace("{o}", str(env.other)).replace("{d}", str(env.data))
            for a in WRITERS[command](out)]
    res = invoke(args)
    assert res.exit_code == 0, res.output
    assert out.is_dir() and any(out.iterdir())


@pytest.fixture
def full_disk(tmp_path):
    with tmpfs(tmp_path / "disk") as d:
        (d / "filler").write_bytes(b"\0" * 60_000)
        yield d


@pytest.mark.parametrize("command", ["train", "prune", "hessian"])
def test_full_disk_is_one_line_and_leaves_nothing(env, full_disk, command):
    before = snapshot(full_disk)
    out = full_disk / ("x.sciprune" if command != "hessian" else "diag")
    args = [str(a).replace("{m}", str(env.model)).replace("{o}", str(env.other)).replace("{d}", str(env.data))
            for a in WRITERS[command](out)]
    if command == "train":
        args[args.index("4")] = "64,64"  # weights larger than the space left
    if command == "prune":
        big = full_disk.parent / "big.sciprune"
        res = invoke(["train", "--data", env.data, "--widths", "64,64", "--epochs", "1", "--out", big])
        assert res.exit_code == 0, res.output
        args[1] = str(big)
    assert_user_error(invoke(args), "No space left", watch=(full_disk,), before=before)


def test_unwritable_folder_is_refused(env, tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes everywhere")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        _run(env, WRITERS["train"](ro / "x.sciprune"), "not writable")
    finally:
        ro.chmod(0o700)


def test_methods_takes_no_arguments():
    assert_user_error(invoke(["methods", "extra"]), "extra")


def test_threads_must_be_positive():
    assert_user_error(invoke(["--threads", "0", "methods"]), "--threads", "0")
