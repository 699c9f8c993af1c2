"""Malformed case files: every bad value is refused when the case is loaded, before any data are
generated or any network trained, with one line naming the file and the key, and nothing written.

Each case starts from ``cases/quickstart.toml``, changes one key, and runs ``sciprune run`` (a subset
also ``sciprune sweep``) in-process. The study entry points are replaced by functions that fail the
test, so a case that passed validation could not silently start a study.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from malformed import assert_raises_user_error, assert_user_error, invoke, snapshot

from sciprune.config import MAX_EPOCHS, MAX_NOISE_LEVEL, load_case
from sciprune.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BASE = tomllib.loads((ROOT / "cases" / "quickstart.toml").read_text())
DROP = object()  # a value that removes the key


# --- a small TOML writer (the standard library only reads TOML) ------------------------------------

def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def _value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(type(v))


def to_toml(d: dict, prefix: str = "") -> str:
    """TOML text of ``d``: scalars and lists as ``key = value``, tables as ``[a.b]`` sections."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in d.items() if not isinstance(v, dict)]
    text = "\n".join(lines) + "\n"
    for k, v in d.items():
        if isinstance(v, dict):
            name = f"{prefix}.{_key(k)}" if prefix else _key(k)
            text += f"\n[{name}]\n" + to_toml(v, name)
    return text


def mutated(key: str, value) -> dict:
    raw = copy.deepcopy(BASE)
    *parents, last = key.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    if value is DROP:
        node.pop(last, None)
    else:
        node[last] = value
    if key.startswith("architectures"):
        raw.pop("model", None)  # [architectures.NAME] replace [model]
    return raw


# --- the study must never start ---------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_study(monkeypatch):
    """Replace the study and data entry points: reaching one means validation let a bad case through."""
    import sciprune.pipeline
    import sciprune.sweep

    def started(*args, **kwargs):
        raise AssertionError("the study started: the case passed load-time validation")

    monkeypatch.setattr(sciprune.pipeline, "run_case", started)
    monkeypatch.setattr(sciprune.sweep, "run_sweep", started)


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with the data file path (never created) and the output folder (must stay absent)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _write(work: Path, raw: dict, name: str = "case.toml") -> Path:
    raw = copy.deepcopy(raw)
    data = raw.get("data")
    if isinstance(data, dict) and data.get("file") == BASE["data"]["file"]:
        data["file"] = str(work / "data" / "ds.h5")
    path = work / name
    path.write_text(to_toml(raw))
    return path


def _refused(work: Path, path: Path, *needles: str, command: str = "run", output: bool = True) -> str:
    out = work / "out"
    watch = (out, work / "data", work / "runs")
    before = snapshot(*watch)
    args = [command, path] + (["--output", out] if output else [])
    return assert_user_error(invoke(args), path.name, *needles, watch=watch, before=before)


# key, value, what the error line must name besides the file (the key path, and the value or rule)
BAD_VALUES = [
    # training and fine-tuning
    ("finetune.lr", math.inf, "finetune.lr"),
    ("finetune.lr", math.nan, "finetune.lr"),
    ("train.lr", -math.inf, "train.lr"),
    ("train.lr", 0.0, "train.lr"),
    ("train.lr", -1e-3, "train.lr"),
    ("train.lr", "0.001", "train.lr"),
    ("train.lr", [0.001], "train.lr"),
    ("train.epochs", -1, "train.epochs"),
    ("train.epochs", MAX_EPOCHS + 1, "train.epochs"),
    ("train.epochs", 2**63 - 1, "train.epochs"),
    ("train.epochs", 1.5, "train.epochs"),
    ("train.epochs", True, "train.epochs"),
    ("train.epochs", "1500", "train.epochs"),
    ("finetune.epochs", 10**12, "finetune.epochs"),
    ("train.batch_size", 0, "train.batch_size"),
    ("train.batch_size", -5, "train.batch_size"),
    ("train.batch_size", 2**40, "train.batch_size"),
    ("train.patience", 0, "train.patience"),
    ("train.patience", 10**9, "train.patience"),
    ("train.step_size", 0, "train.step_size"),
    ("train.eval_every", 0, "train.eval_every"),
    ("train.eval_every", 10**10, "train.eval_every"),
    ("train.gamma", 1.0, "train.gamma"),
    ("train.gamma", 0.0, "train.gamma"),
    ("train.gamma", math.nan, "train.gamma"),
    ("train.weight_decay", -1.0, "train.weight_decay"),
    ("train.weight_decay", math.inf, "train.weight_decay"),
    ("finetune.momentum", -0.1, "finetune.momentum"),
    ("finetune.momentum", math.nan, "finetune.momentum"),
    ("train.optimizer", "rmsprop", "train.optimizer"),
    ("train.lr_schedule", "linear", "train.lr_schedule"),
    ("train.schedule", "cosine", "renamed 'lr_schedule'"),
    ("train.lrr", 0.1, "train.lrr: unknown key"),
    ("finetune", [1, 2], "finetune"),
    ("train", "fast", "train"),
    # seeds
    ("seeds", [-1], "seeds.0"),
    ("seeds", [0, 2**32], "seeds.1"),
    ("seeds", [2**63 - 1], "seeds.0"),
    ("seeds", [0, 0], "seeds must be distinct"),
    ("seeds", [3, 1, 3], "seeds must be distinct"),
    ("seeds", [], "seeds"),
    ("seeds", [1.5], "seeds.0"),
    ("seeds", "0", "seeds"),
    ("seeds", [True], "seeds.0"),
    # noise
    ("noise.levels", [1e308], "noise.levels.0"),
    ("noise.levels", [0.0, MAX_NOISE_LEVEL * 10], "noise.levels.1"),
    ("noise.levels", [math.inf], "noise.levels.0"),
    ("noise.levels", [math.nan], "noise.levels.0"),
    ("noise.levels", [-0.1], "noise.levels.0"),
    ("noise.levels", [0.1, 0.1], "noise levels must be distinct"),
    ("noise.levels", [], "noise.levels"),
    ("noise.levels", 0.005, "noise.levels"),
    ("noise.kind", "none", "noise.levels.0"),
    ("noise.kind", "laplace", "noise.kind"),
    # the network
    ("model.widths", [4_000_000_000], "model.widths"),
    ("model.widths", [2**40, 2**40], "model.widths"),
    ("model.widths", [0], "model.widths.0"),
    ("model.widths", [32, -3], "model.widths.1"),
    ("model.widths", "32", "model.widths"),
    ("model.widths", [32.5], "model.widths.0"),
    ("model.activation", "swish", "model.activation"),
    ("model.kind", "cnn", "model.kind"),
    ("model.kind", "lenet-300-100", "model.widths"),
    ("model.depth", 3, "model.depth: unknown key"),
    ("model", [32, 32], "model"),
    ("architectures", {"../../ESCAPED": {"widths": [4]}}, "../../ESCAPED"),
    ("architectures", {"a/b": {"widths": [4]}}, "a/b"),
    ("architectures", {"": {"widths": [4]}}, "architecture name"),
    ("architectures", {"a\x00b": {"widths": [4]}}, "a\\x00b"),
    ("architectures", {".hidden": {"widths": [4]}}, ".hidden"),
    ("architectures", {"x" * 200: {"widths": [4]}}, "architecture name"),
    ("architectures", {"ok": {"widths": [10**10]}}, "architectures.ok.widths"),
    ("architectures", {"ok": [4]}, "architectures.ok"),
    ("architectures", {"ok": {"widths": [4], "depth": 2}}, "architectures.ok.depth"),
    # names that become file names
    ("name", "../x", "name"),
    ("name", "", "name"),
    ("name", "a\x00", "name"),
    ("name", "x" * 200, "name"),
    ("name", "two words", "name"),
    ("name", 7, "name"),
    # pruning
    ("prune.methods", ["nope"], "prune.methods"),
    ("prune.methods", ["ec", "ec"], "prune.methods"),
    ("prune.methods", ["magnitude", "ec", "magnitude"], "listed more than once"),
    ("prune.methods", [], "prune.methods"),
    ("prune.methods", "ec", "prune.methods"),
    ("prune.methods", ["all", "ec"], "prune.methods"),
    ("prune.options", {"ec": {"bogus": 1}}, "prune.options.ec"),
    ("prune.options", {"ec": {"probes": 0}}, "prune.options.ec"),
    ("prune.options", {"ec": {"probes": "many"}}, "prune.options.ec"),
    ("prune.options", {"ec": {"probes": 2.5}}, "prune.options.ec"),
    ("prune.options", {"ec": {"probes": 10**12, "probe_distribution": "x"}}, "prune.options.ec"),
    ("prune.options", {"taylor-output": {"probe_distribution": "cauchy"}}, "prune.options.taylor-output"),
    ("prune.options", {"ec-exact": {"max_weights": -1}}, "prune.options.ec-exact"),
    ("prune.options", {"magnitude": {"seed": 3}}, "prune.options.magnitude"),
    ("prune.options", {"random": {"names": ["linear0.weight"]}}, "prune.options.random"),
    ("prune.options", {"ec": 3}, "prune.options.ec"),
    ("prune.options", {"nope": {}}, "prune.options"),
    ("prune.compensate", ["nope"], "prune.compensate"),
    ("prune.compensate", ["magnitude", "magnitude"], "prune.compensate"),
    ("prune.no_compensate", ["ec", "ec"], "prune.no_compensate"),
    ("prune.ratios", [1.0], "prune.ratios"),
    ("prune.ratios", [math.nan], "prune.ratios"),
    ("prune.ratios", [-0.1], "prune.ratios"),
    ("prune.ratios", [], "prune.ratios"),
    ("prune.scope", "local", "prune.scope"),
    ("prune.snapshot_ratio", 0.33, "prune.snapshot_ratio"),
    ("prune.snapshot_ratio", math.inf, "prune.snapshot_ratio"),
    # device and dtype
    ("device", "tpu", "device"),
    ("device", "cuda:x", "device"),
    ("device", "cuda:-1", "device"),
    ("device", "cpu:0", "device"),
    ("device", "", "device"),
    ("device", "cuda:0\x00", "device"),
    ("dtype", "float16", "dtype"),
    # data
    ("data.sample", 1, "data.sample"),
    ("data.sample", -1, "data.sample"),
    ("data.test_fraction", 0.0, "data.test_fraction"),
    ("data.test_fraction", 1.0, "data.test_fraction"),
    ("data.test_fraction", 1e-9, "data.test_fraction"),
    ("data.test_fraction", math.nan, "data.test_fraction"),
    ("data.val_fraction", 0.9, "data"),
    ("data.val_fraction", -0.1, "data.val_fraction"),
    ("data.split", "spatial", "data.split"),
    ("data.kind", "images", "data.kind"),
    ("data.file", "", "data.file"),
    ("data.file", "a\x00.h5", "data.file"),
    ("data.file", DROP, "data.file"),
    ("data.generate.nx", 2, "data.generate.nx"),
    ("data.generate.nx", 10**9, "data.generate"),
    ("data.generate.samples", 0, "data.generate.samples"),
    ("data.generate.samples", 10**9, "data.generate.samples"),
    ("data.generate.nt", 1, "data.generate.nt"),
    ("data.generate.mode", "fast", "data.generate.mode"),
    ("data.generate.workers", 0, "data.generate.workers"),
    ("data.generate", 5, "data.generate"),
    ("data", [1, 2], "data"),
    # the rest
    ("save_models", "yes", "save_models"),
    ("baseline.scratch", "yes", "baseline.scratch"),
    ("baseline.extra", 1, "baseline.extra: unknown key"),
    ("trian", {"lr": 1.0}, "trian: unknown key"),
]


@pytest.mark.parametrize("key, value, needle", BAD_VALUES, ids=[f"{k}={v!r}"[:60] for k, v, _ in BAD_VALUES])
def test_bad_value_refused_before_any_work(work, key, value, needle):
    _refused(work, _write(work, mutated(key, value)), needle)


SWEEP_CASES = [c for c in BAD_VALUES if c[0] in {
    "finetune.lr", "train.epochs", "seeds", "noise.levels", "model.widths", "prune.methods", "prune.options",
    "device", "data.sample"}][::3]


@pytest.mark.parametrize("key, value, needle", SWEEP_CASES, ids=[f"{k}={v!r}"[:60] for k, v, _ in SWEEP_CASES])
def test_bad_value_refused_by_sweep(work, key, value, needle):
    _refused(work, _write(work, mutated(key, value)), needle, command="sweep")


@pytest.mark.parametrize("value, needle", [("", "output"), ("runs/a\x00b", "output")])
def test_bad_output_in_the_case_file(work, value, needle):
    _refused(work, _write(work, mutated("output", value)), needle, output=False)


def test_shipped_case_is_valid_here(work):
    """The base of every mutation passes, so each refusal above is the mutated key's."""
    case = load_case(_write(work, BASE))
    assert case.name == "quickstart" and not (work / "data").exists()


# --- files that are not TOML case files --------------------------------------------------------------

def _raw_file(work: Path, content: bytes) -> Path:
    path = work / "case.toml"
    path.write_bytes(content)
    return path


UNREADABLE = [
    (b"name = \"caf\xe9\"\n", ("line 1", "utf-8")),
    (b"seeds = [0]\n\xff\xfe\x00\x01", ("binary",)),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", ("binary",)),
    (b"seeds = [0]\nname = \"a\xc3\x28\"\n", ("line 2", "utf-8")),
    (b"name = [", ("not valid TOML",)),
    (b"[train]\nlr = 1e-3\n[train]\nepochs = 2\n", ("not valid TOML",)),
    (b"seeds = [0,\n", ("not valid TOML",)),
    (b"a = " + b"[" * 5000 + b"]" * 5000, ("nested too deeply",)),
    (b"a = " + b"{b=" * 3000 + b"1" + b"}" * 3000, ("nested too deeply",)),
    (b"seeds = 0\n", ("seeds",)),
    (b"[seeds]\nx = 1\n", ("seeds",)),
    (b"data = \"file.h5\"\n", ("data",)),
    (b"[" + b".".join([b"a"] * 3000) + b"]\nx = 1\n", ("a: unknown key",)),
]


@pytest.mark.parametrize("content, needles", UNREADABLE, ids=[
    "latin-1", "binary junk", "png", "bad utf-8 line 2", "unclosed list", "table twice", "unclosed list 2",
    "deep list", "deep inline table", "scalar for list", "table for list", "string for table", "deep dotted table"])
def test_unreadable_case_files(work, content, needles):
    _refused(work, _raw_file(work, content), *needles)


def test_utf8_with_byte_order_mark_is_read(work):
    path = _raw_file(work, b"\xef\xbb\xbf" + to_toml(BASE).encode())
    assert load_case(path).name == "quickstart"


def test_case_file_that_is_a_folder_missing_or_huge(work):
    folder = work / "case.toml"
    folder.mkdir()
    _refused(work, folder, "is a folder")
    _refused(work, work / "missing.toml", "no such case file")
    big = work / "big.toml"
    big.write_bytes(b"# " + b"x" * (2 << 20) + b"\n")
    _refused(work, big, "too large")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes")
def test_case_file_that_is_a_pipe_does_not_hang(work):
    fifo = work / "case.toml"
    os.mkfifo(fifo)
    _refused(work, fifo, "not a regular file")


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads any file")
def test_unreadable_case_file(work):
    path = _write(work, BASE)
    path.chmod(0)
    try:
        _refused(work, path, "cannot read")
    finally:
        path.chmod(0o644)


def test_library_load_case_errors(work):
    assert_raises_user_error(lambda: load_case(None), "case file")
    assert_raises_user_error(lambda: load_case("a\x00b.toml"), "case file")
    path = _write(work, BASE)
    assert_raises_user_error(lambda: load_case(path, {"train.lr.x": 1}), "train.lr")
    assert_raises_user_error(lambda: load_case(path, {"device": "tpu"}), "device")


# --- validation happens before the data and the first training ---------------------------------------

def test_case_errors_found_before_training(work, monkeypatch):
    """The issue's examples (``finetune.lr = inf``, an unknown option) reach the real ``run_case`` /
    ``run_sweep`` entry: nothing is generated or trained and the output folder is never made."""
    import importlib

    import sciprune.pipeline
    import sciprune.sweep
    import sciprune.training

    monkeypatch.undo()  # the real study entry points
    monkeypatch.chdir(work)
    calls = []

    def forbidden(*args, **kwargs):
        calls.append(args)
        raise AssertionError("trained or generated data before validating the case")

    for module, name in [(sciprune.training, "fit"), (sciprune.pipeline, "fit"), (sciprune.study, "ensure_data"),
                         (importlib.import_module("sciprune.sweep._work"), "fit_many")]:
        monkeypatch.setattr(module, name, forbidden)
    assert sciprune.sweep.run_sweep.__module__ == "sciprune.sweep._local"
    for key, value, needle in [("finetune.lr", math.inf, "finetune.lr"),
                               ("prune.options", {"ec": {"probez": 4}}, "prune.options.ec")]:
        for command in ("run", "sweep"):
            _refused(work, _write(work, mutated(key, value)), needle, command=command)
    assert calls == []


# --- fuzzing: any bytes, any value at any key: a case or one ConfigError line, nothing else -------------

KEYS = sorted({k for k, _, _ in BAD_VALUES if not k.startswith("architectures")} | {"prune.options.ec"})
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                    st.text(max_size=12))
VALUES = st.recursive(SCALARS.filter(lambda v: v is not None), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)), max_leaves=6)


def _loads_or_one_line(path: Path) -> None:
    try:
        load_case(path)
    except ConfigError as err:
        assert "\n" not in str(err).strip() and str(path) in str(err), str(err)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=200))
def test_any_bytes_give_a_case_or_one_line(work, content):
    _loads_or_one_line(_raw_file(work, content))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_at_any_key_gives_a_case_or_one_line(work, key, value):
    raw = mutated(key, value)
    path = work / "case.toml"
    try:
        path.write_text(to_toml(raw))
    except (TypeError, UnicodeEncodeError):  # not writable as TOML (surrogates): nothing to test
        return
    _loads_or_one_line(path)
