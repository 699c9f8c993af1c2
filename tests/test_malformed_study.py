"""Malformed study outputs for ``sciprune run`` and ``sciprune sweep``.

Refused (exit 2, one ``Error:`` line naming the path, the output folder exactly as before): output
paths that cannot be written (a file as parent or as the folder, a dangling link, a folder without
write permission, a NUL byte), entries of the study of the wrong kind (``blocks`` a file, ``results.nc``
a folder, ...), a folder holding another case's study, a folder in use by another process, and a full
disk (no temporary file left). Recovered (exit 0, one line ``<path>: damaged (...); recomputing``
each, results equal to an undamaged study's): sweep records of the wrong shape, garbage dense weights,
damaged ``run`` blocks, a damaged study marker or data-hash cache.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import tiny_case
from malformed import assert_user_error, invoke, snapshot, tmpfs

from sciprune.results import read_dataset, write_dataset
from sciprune.study_lock import HASH_CACHE_NAME, LOCK_NAME, MARKER_NAME, open_study

COMMANDS = ["run", "sweep"]


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures cost seconds of matplotlib per run and are tested in tests/test_pipeline.py."""
    import sciprune.pipeline

    monkeypatch.setattr(sciprune.pipeline, "_figures", lambda *args: None)


def case_file(folder: Path, data: Path, output: Path | str, name: str = "case.toml") -> Path:
    path = folder / name
    path.write_text(tiny_case(output, data))
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    """A tiny data file and one finished study per command: {"data": path, "run": out, "sweep": out}."""
    from sciprune.data.diffsorp import generate

    import sciprune.pipeline

    root = tmp_path_factory.mktemp("study")
    data = generate(root / "ds.h5", n_samples=1, nx=24, nt=11, mode="accurate", workers=1)
    found = {"data": Path(data)}
    keep, sciprune.pipeline._figures = sciprune.pipeline._figures, lambda *args: None
    try:
        for command in COMMANDS:
            out = root / command
            r = invoke([command, case_file(root, data, out, f"{command}.toml"), "--quiet"])
            assert r.exit_code == 0, r.output
            found[command] = out
    finally:
        sciprune.pipeline._figures = keep
    return found


def copy_study(study: dict, command: str, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the finished study of ``command`` in ``tmp_path``: (case file, output folder)."""
    out = tmp_path / "out"
    shutil.copytree(study[command], out)
    return case_file(tmp_path, study["data"], out), out


# ---------------------------------------------------------------- refused: exit 2, nothing changed

def _file_as_parent(tmp: Path) -> tuple[str, str]:
    (tmp / "afile").write_text("x")
    return str(tmp / "afile" / "out"), "is not a folder"


def _file_as_output(tmp: Path) -> tuple[str, str]:
    (tmp / "out.txt").write_text("x")
    return str(tmp / "out.txt"), "is not a folder"


def _dangling_output(tmp: Path) -> tuple[str, str]:
    os.symlink(tmp / "nowhere", tmp / "link")
    return str(tmp / "link" / "out"), "link"


def _nul_in_output(tmp: Path) -> tuple[str, str]:
    return str(tmp / "o\x00ut"), "nul"


def _unwritable(tmp: Path) -> tuple[str, str]:
    if os.geteuid() == 0:
        pytest.skip("root writes into any folder")
    (tmp / "ro").mkdir()
    os.chmod(tmp / "ro", 0o500)
    return str(tmp / "ro" / "out"), "not writable"


OUTPUT_PATHS = {"parent-is-file": _file_as_parent, "output-is-file": _file_as_output,
                "dangling-link": _dangling_output, "nul-byte": _nul_in_output, "unwritable": _unwritable}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", list(OUTPUT_PATHS))
def test_unwritable_output_refused_before_any_work(tmp_path, study, command, kind):
    output, needle = OUTPUT_PATHS[kind](tmp_path)
    case = case_file(tmp_path, study["data"], "unused")
    before = snapshot(tmp_path)
    r = invoke([command, case, "--output", output, "--quiet"])
    assert_user_error(r, needle, watch=(tmp_path,), before=before)


def _make_file(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("not a folder")


def _make_dir(p: Path) -> None:
    p.unlink(missing_ok=True)
    p.mkdir(parents=True)


def _make_dangling(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    p.unlink(missing_ok=True)
    os.symlink(p.parent / "gone", p)


LAYOUT = {
    "blocks-is-file": ("blocks", _make_file), "models-is-file": ("models", _make_file),
    "sweep-is-file": ("sweep", _make_file), "sweep-runs-is-file": ("sweep/runs", _make_file),
    "sweep-models-is-file": ("sweep/models", _make_file), "results-is-folder": ("results.nc", _make_dir),
    "marker-is-folder": (MARKER_NAME, _make_dir), "lock-is-folder": (LOCK_NAME, _make_dir),
    "blocks-dangling-link": ("blocks", _make_dangling),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", list(LAYOUT))
def test_study_entry_of_the_wrong_kind_refused(tmp_path, study, command, kind):
    case, out = copy_study(study, command, tmp_path)
    rel, make = LAYOUT[kind]
    make(out / rel)
    before = snapshot(out)
    r = invoke([command, case, "--quiet"])
    assert_user_error(r, str(out / rel), watch=(out,), before=before)


@pytest.mark.parametrize("command", COMMANDS)
def test_output_of_another_case_refused(tmp_path, study, command):
    _, out = copy_study(study, command, tmp_path)
    other = tmp_path / "other.toml"
    other.write_text(tiny_case(out, study["data"], name="other"))
    before = snapshot(out)
    r = invoke([command, other, "--quiet"])
    assert_user_error(r, str(out), "'tiny'", "'other'", watch=(out,), before=before)


@pytest.mark.parametrize("command", COMMANDS)
def test_output_in_use_refused(tmp_path, study, command):
    case, out = copy_study(study, command, tmp_path)
    with open_study(out, name="tiny", case_hash="x", command="run", echo=lambda s: None):
        (out / "blocks").mkdir(exist_ok=True)
        (out / "blocks" / ".inflight.nc.abc.tmp").write_bytes(b"being written")
        before = snapshot(out)
        r = invoke([command, case, "--quiet"])
        assert_user_error(r, str(out), "in use", f"pid {os.getpid()}", "--wait", watch=(out,), before=before)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("data", ["missing.h5", "a-folder"])
def test_missing_data_refused_before_the_output_exists(tmp_path, command, data):
    (tmp_path / "a-folder").mkdir()
    case = case_file(tmp_path, tmp_path / data, tmp_path / "out")
    before = snapshot(tmp_path)
    r = invoke([command, case, "--quiet"])
    assert_user_error(r, "data.file", str(tmp_path / data), watch=(tmp_path,), before=before)


@pytest.fixture
def full_disk(tmp_path):
    """A 48 KiB tmpfs (root only; skipped elsewhere)."""
    with tmpfs(tmp_path / "mnt", "size=48k") as mnt:
        yield mnt


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("free_kib", [4, 8, 16, 24])
def test_full_disk_is_one_line_and_leaves_no_temporary_file(tmp_path, study, full_disk, command, free_kib):
    """The disk fills at different points (marker, block, dense weights, record, results.nc) as ``free_kib`` varies."""
    (full_disk / "filler").write_bytes(b"\0" * ((48 - free_kib) * 1024))
    out = full_disk / "out"
    case = case_file(tmp_path, study["data"], out)
    r = invoke([command, case, "--quiet"])
    if r.exit_code == 0:  # everything fitted: then the results are complete
        assert (out / "results.nc").is_file()
    else:
        assert_user_error(r, "No space left on device")
    left = [p for p in full_disk.rglob("*") if ".tmp" in p.name]
    assert not left, left


# ---------------------------------------------------------------- damaged: reported, recomputed

def _run_file(out: Path, kind: str) -> Path:
    for p in sorted((out / "sweep" / "runs").glob("*.json")):
        if json.loads(p.read_text())["kind"] == kind:
            return p
    raise AssertionError(kind)


def _edit_json(path: Path, edit) -> None:
    rec = json.loads(path.read_text())
    edit(rec)
    path.write_text(json.dumps(rec))


RECORDS = {
    "not-json": ("prune", lambda p: p.write_text('{"key": ')),
    "empty": ("prune", lambda p: p.write_bytes(b"")),
    "not-utf8": ("dense", lambda p: p.write_bytes(b"\xff\xfe\x00garbage")),
    "a-list": ("prune", lambda p: p.write_text("[1, 2, 3]")),
    "missing-finetuned": ("prune", lambda p: _edit_json(p, lambda r: r.pop("finetuned"))),
    "metric-is-text": ("prune", lambda p: _edit_json(p, lambda r: r["pruned"].update(test_mse="0.1"))),
    "metric-missing": ("prune", lambda p: _edit_json(p, lambda r: r["finetuned"].pop("test_mse_clean"))),
    "metrics-a-list": ("dense", lambda p: _edit_json(p, lambda r: r.update(metrics=[1.0, 2.0]))),
    "sparsity-null": ("prune", lambda p: _edit_json(p, lambda r: r.update(sparsity=None))),
    "weights-negative": ("dense", lambda p: _edit_json(p, lambda r: r.update(weights=-3))),
    "weights-bool": ("dense", lambda p: _edit_json(p, lambda r: r.update(weights=True))),
    "wrong-key": ("prune", lambda p: _edit_json(p, lambda r: r.update(key="0" * 24))),
    "unknown-kind": ("dense", lambda p: _edit_json(p, lambda r: r.update(kind="magic"))),
    "kind-of-another-run": ("prune", lambda p: _edit_json(p, lambda r: r.update(kind="dense", metrics={}, weights=1))),
}


def _assert_recovered(r, path: Path, out: Path, reference: Path) -> None:
    assert r.exit_code == 0, r.output
    assert "Traceback" not in r.output
    lines = [ln for ln in r.output.splitlines() if ": damaged (" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"{path}: damaged (") and lines[0].endswith("; recomputing"), r.output
    a, b = read_dataset(out / "results.nc"), read_dataset(reference / "results.nc")
    for v in b.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=v)
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]


@pytest.mark.parametrize("kind", list(RECORDS))
def test_damaged_sweep_record_reported_and_recomputed(tmp_path, study, kind):
    case, out = copy_study(study, "sweep", tmp_path)
    run_kind, damage = RECORDS[kind]
    path = _run_file(out, run_kind)
    damage(path)
    r = invoke(["sweep", case, "--quiet"])
    _assert_recovered(r, path, out, study["sweep"])
    assert json.loads(path.read_text())["kind"] == run_kind  # rewritten


def _state(out: Path) -> dict:
    return torch.load(next((out / "sweep" / "models").glob("*.pt")), weights_only=True)


MODELS = {
    "garbage": lambda p, s: p.write_bytes(os.urandom(300)),
    "empty": lambda p, s: p.write_bytes(b""),
    "truncated": lambda p, s: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "a-list": lambda p, s: torch.save([1, 2, 3], p),
    "wrong-shapes": lambda p, s: torch.save({k: torch.zeros(3, *v.shape) for k, v in s.items()}, p),
    "renamed-layers": lambda p, s: torch.save({f"x.{k}": v for k, v in s.items()}, p),
    "integer-weights": lambda p, s: torch.save({k: v.to(torch.int64) for k, v in s.items()}, p),
}


@pytest.mark.parametrize("kind", list(MODELS))
def test_damaged_dense_weights_reported_and_retrained(tmp_path, study, kind):
    case, out = copy_study(study, "sweep", tmp_path)
    path = next((out / "sweep" / "models").glob("*.pt"))
    MODELS[kind](path, _state(out))
    _run_file(out, "prune").unlink()  # a pruning run is pending, so the dense weights are needed
    r = invoke(["sweep", case, "--quiet"])
    _assert_recovered(r, path, out, study["sweep"])
    ref = torch.load(next((study["sweep"] / "sweep" / "models").glob("*.pt")), weights_only=True)
    got = _state(out)
    assert all(torch.equal(got[k], ref[k]) for k in ref) and set(got) == set(ref)


def _block(out: Path) -> Path:
    return next((out / "blocks").glob("*.nc"))


def _rewrite_block(path: Path, edit) -> None:
    write_dataset(edit(read_dataset(path)), path)


BLOCKS = {
    "garbage": lambda p: p.write_bytes(os.urandom(500)),
    "empty": lambda p: p.write_bytes(b""),
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "missing-variable": lambda p: _rewrite_block(p, lambda ds: ds.drop_vars("test_mse")),
    "other-ratios": lambda p: _rewrite_block(p, lambda ds: ds.assign_coords(ratio=[0.25])),
    "text-variable": lambda p: _rewrite_block(p, lambda ds: ds.assign(dense_test_mse=ds["dense_test_mse"].astype(str))),
}


@pytest.mark.parametrize("kind", list(BLOCKS))
def test_damaged_run_block_reported_and_recomputed(tmp_path, study, kind):
    case, out = copy_study(study, "run", tmp_path)
    path = _block(out)
    BLOCKS[kind](path)
    r = invoke(["run", case, "--quiet"])
    _assert_recovered(r, path, out, study["run"])


@pytest.mark.parametrize("command", COMMANDS)
def test_damaged_marker_is_replaced(tmp_path, study, command):
    case, out = copy_study(study, command, tmp_path)
    (out / MARKER_NAME).write_text("{not json")
    r = invoke([command, case, "--quiet"])
    assert r.exit_code == 0 and f"{out / MARKER_NAME}: damaged (" in r.output and "replacing it" in r.output, r.output
    assert json.loads((out / MARKER_NAME).read_text())["name"] == "tiny"


@pytest.mark.parametrize("command", COMMANDS)
def test_damaged_hash_cache_is_ignored(tmp_path, study, command):
    case, out = copy_study(study, command, tmp_path)
    (out / HASH_CACHE_NAME).write_bytes(b"\x00\x01 not a cache")
    r = invoke([command, case, "--quiet"])
    assert r.exit_code == 0 and "recomputing" not in r.output, r.output
    assert read_dataset(out / "results.nc").attrs["data_sha256"] == read_dataset(study[command] / "results.nc").attrs["data_sha256"]


# ---------------------------------------------------------------- atomic writes: no temporary file on any error

def _fail(*args, **kwargs):
    raise OSError(28, "No space left on device")


@pytest.mark.parametrize("step", ["write", "fsync", "chmod", "replace"])
def test_atomic_write_removes_its_temporary_file_on_any_error(tmp_path, monkeypatch, step):
    import builtins

    import sciprune.outputs as results

    dest = tmp_path / "r.nc"
    dest.write_bytes(b"old")
    if step == "write":
        real_open = builtins.open
        monkeypatch.setattr(builtins, "open", lambda f, m="r", *a, **k: (_fail() if "w" in m else real_open(f, m, *a, **k)))
    else:
        monkeypatch.setattr(results.os, step, _fail)
    with pytest.raises(OSError) as info:
        results.write_bytes_atomic(dest, b"new")
    monkeypatch.undo()
    assert info.value.filename == str(dest) and "No space left" in str(info.value)
    assert dest.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["r.nc"]


@pytest.mark.parametrize("address", ["", "0", "abc", "/dev/null", "tcp://", "tcp://host", "host:port", "a\x00b:1",
                                     "http://host:8786", "x" * 300])
def test_bad_scheduler_address_is_one_line_before_any_work(study, tmp_path, address):
    """``sweep --scheduler`` is checked before a cluster is contacted (Dask's parser raises
    ValueError or AssertionError on such addresses); the output folder is never made."""
    out = tmp_path / "out"
    case = case_file(tmp_path, study["data"], out)
    before = snapshot(tmp_path)
    r = invoke(["sweep", case, "--quiet", "--scheduler", address])
    assert_user_error(r, "--scheduler", watch=(tmp_path,), before=before)
