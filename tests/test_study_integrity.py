"""Stored results of ``run`` and ``sweep`` are keyed on the content of their input data, output
folders are held by one process at a time, and orphaned temporary files are cleaned only under the lock.

The stale-data test changes the data file in place between two runs: the second run recomputes, says
why, and equals a fresh run bitwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers import tiny_case
from malformed import invoke, snapshot

from sciprune.data.classification import write_classification_h5, write_idx
from sciprune.fingerprint import HashCache, data_fingerprint
from sciprune.config import DataSpec
from sciprune.results import read_dataset
from sciprune.study_lock import HOLDER_NAME, LOCK_NAME, MARKER_NAME

@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures cost seconds of matplotlib per run and are tested elsewhere (tests/test_pipeline.py)."""
    import sciprune.pipeline

    monkeypatch.setattr(sciprune.pipeline, "_figures", lambda *args: None)


def write_case(folder: Path, data: Path, output: Path, *, name: str = "tiny", epochs: int = 3) -> Path:
    path = folder / f"{name}_{output.name}.toml"
    path.write_text(tiny_case(output, data, name=name, train={"epochs": epochs}, finetune={"lr": 3e-3}))
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A small diffusion-sorption file (one sample, 24 x 11)."""
    from sciprune.data.diffsorp import generate

    path = tmp_path_factory.mktemp("data") / "ds.h5"
    generate(path, n_samples=1, nx=24, nt=11, mode="accurate", workers=1)
    return path


def edit_in_place(path: Path, factor: float = 1.5) -> None:
    """Scale the sample's values inside the file: same path, same inode, new contents."""
    inode = path.stat().st_ino
    with h5py.File(path, "r+") as f:
        group = next(iter(f.values()))
        group["data"][...] = group["data"][...] * factor
    assert path.stat().st_ino == inode


def assert_identical(a, b, what: str) -> None:
    assert set(a.data_vars) == set(b.data_vars), what
    for v in a.data_vars:
        np.testing.assert_array_equal(a[v].values, b[v].values, err_msg=f"{what}: {v}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_data_changed_in_place_is_recomputed_and_equals_a_fresh_run(tmp_path, tiny_data, command):
    data = tmp_path / "data.h5"
    shutil.copy(tiny_data, data)
    case = write_case(tmp_path, data, tmp_path / "out")
    first = invoke([command, case, "--quiet"])
    assert first.exit_code == 0, first.output
    before = read_dataset(tmp_path / "out" / "results.nc")
    old = sha256(data)
    edit_in_place(data)
    new = sha256(data)
    second = invoke([command, case, "--quiet"])
    assert second.exit_code == 0, second.output
    assert f"changed (sha256 {old[:12]}.. -> {new[:12]}..)" in second.output, second.output
    assert str(data) in second.output
    again = read_dataset(tmp_path / "out" / "results.nc")
    assert again.attrs["data_sha256"] == new and before.attrs["data_sha256"] == old
    fresh_case = write_case(tmp_path, data, tmp_path / "fresh")
    assert invoke([command, fresh_case, "--quiet"]).exit_code == 0
    fresh = read_dataset(tmp_path / "fresh" / "results.nc")
    assert_identical(again, fresh, "recomputed vs fresh")
    assert not np.array_equal(before["dense_test_mse"].values, again["dense_test_mse"].values)
    third = invoke([command, case, "--quiet"])  # unchanged data: nothing recomputed, same numbers
    assert third.exit_code == 0 and "recomputing" not in third.output and "(sha256" not in third.output, third.output
    assert_identical(read_dataset(tmp_path / "out" / "results.nc"), fresh, "rerun")


def test_file_hash_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    import sciprune.fingerprint as fpm

    monkeypatch.setattr(fpm, "RACY_SECONDS", -1.0)  # the file was just written (its ctime is now)
    f = tmp_path / "d.h5"
    f.write_bytes(b"abc" * 1000)
    past = time.time() - 60
    os.utime(f, (past, past))
    calls = []
    real = fpm._sha256_file
    monkeypatch.setattr(fpm, "_sha256_file", lambda p, **k: calls.append(p) or real(p, **k))
    spec = DataSpec(kind="pdebench", file=str(f))
    cache_file = tmp_path / "cache.json"
    c1 = HashCache(cache_file)
    fp = data_fingerprint(spec, cache=c1)
    c1.save()
    assert fp.sha256 == sha256(f) and len(calls) == 1
    assert data_fingerprint(spec, cache=HashCache(cache_file)).sha256 == fp.sha256 and len(calls) == 1
    f.write_bytes(b"abd" * 1000)  # same size, new contents, new mtime
    os.utime(f, (past + 1, past + 1))
    assert data_fingerprint(spec, cache=HashCache(cache_file)).sha256 == sha256(f) != fp.sha256
    assert len(calls) == 2


def test_recently_modified_file_is_not_cached_and_damaged_cache_is_ignored(tmp_path):
    f = tmp_path / "d.h5"
    f.write_bytes(b"x" * 100)
    cache = HashCache(tmp_path / "cache.json")
    data_fingerprint(DataSpec(kind="pdebench", file=str(f)), cache=cache)
    assert not cache.entries  # modified within RACY_SECONDS: its mtime cannot yet tell a change apart
    for junk in (b"{", b"[1, 2]", b'{"/x": {"sha256": 5}}', b"\xff\xfe"):
        (tmp_path / "cache.json").write_bytes(junk)
        assert data_fingerprint(DataSpec(kind="pdebench", file=str(f)), cache=HashCache(tmp_path / "cache.json")).sha256 == sha256(f)


def test_fingerprints_of_classification_sources(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 255, (20, 4, 4), dtype=np.uint8), rng.integers(0, 3, 20)
    h5 = write_classification_h5(tmp_path / "c.h5", images, labels)
    fp = data_fingerprint(DataSpec(kind="classification", source=str(h5)))
    assert fp.sha256 == sha256(Path(h5))
    idx = tmp_path / "idx"
    idx.mkdir()
    write_idx(idx / "train-images-idx3-ubyte", images)
    write_idx(idx / "train-labels-idx1-ubyte", labels.astype(np.uint8))
    spec = DataSpec(kind="classification", source=str(idx))
    a = data_fingerprint(spec)
    write_idx(idx / "train-labels-idx1-ubyte", ((labels + 1) % 3).astype(np.uint8))
    b = data_fingerprint(spec)
    write_idx(idx / "t10k-images-idx3-ubyte", images[:5])
    write_idx(idx / "t10k-labels-idx1-ubyte", labels[:5].astype(np.uint8))
    c = data_fingerprint(spec)
    assert len({a.sha256, b.sha256, c.sha256}) == 3
    assert set(c.detail["files"]) == {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                      "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}
    from sciprune.data.classification import load_digits_default

    d = data_fingerprint(DataSpec(kind="classification", source="digits"))
    im, lab = load_digits_default()
    h = hashlib.sha256()
    for arr in (im.astype(np.float64), lab.astype(np.int64)):
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    assert d.sha256 == h.hexdigest() and d.detail["sklearn"]


HOLD = """
import json, os, socket, sys, time
from pathlib import Path
from filelock import FileLock
out = Path(sys.argv[1])
lock = FileLock(str(out / ".sciprune.lock"))
lock.acquire(timeout=0)
(out / ".sciprune.lock.holder").write_text(json.dumps(
    {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(), "command": "sciprune run"}))
tmp = out / "blocks" / ".model__noise0__seed0.nc.inflight.tmp"
tmp.parent.mkdir(exist_ok=True)
tmp.write_bytes(b"half a block")
print("held", flush=True)
time.sleep(120)
"""  # a writer holding the folder as open_study does (light: no torch import)


def _wait_for(proc: subprocess.Popen, text: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    line = ""
    while time.time() < deadline and text not in line:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"holder exited early: {proc.returncode}")
    assert text in line, line


def test_busy_output_refused_inflight_temp_kept_and_cleaned_after_holder_is_killed(tmp_path, tiny_data):
    out = tmp_path / "out"
    case = write_case(tmp_path, tiny_data, out)
    ref_case = write_case(tmp_path, tiny_data, tmp_path / "ref")
    assert invoke(["run", ref_case, "--quiet"]).exit_code == 0
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(holder, "held")
        inflight = out / "blocks" / ".model__noise0__seed0.nc.inflight.tmp"
        before = snapshot(out)
        for command in ("run", "sweep"):
            r = invoke([command, case, "--quiet"])
            assert r.exit_code == 2, r.output
            line = r.output.strip()
            assert line.count("\n") == 0 and str(out) in line and f"pid {holder.pid}" in line and "in use" in line, line
        assert inflight.exists() and snapshot(out) == before  # another process's temp file is never deleted
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (out / HOLDER_NAME).exists()  # a killed holder leaves its note, but not the lock
    r = invoke(["run", case, "--quiet"])
    assert r.exit_code == 0, r.output
    assert "removed 1 temporary file(s)" in r.output and not inflight.exists()
    assert not (out / HOLDER_NAME).exists() and (out / LOCK_NAME).exists()
    assert json.loads((out / MARKER_NAME).read_text())["name"] == "tiny"  # the folder now records its study
    assert_identical(read_dataset(out / "results.nc"), read_dataset(tmp_path / "ref" / "results.nc"), "after kill")


def test_two_processes_on_one_output_never_mix(tmp_path, tiny_data):
    """Two ``sciprune sweep`` processes started together on one output (one with --wait): the loser
    exits 2 with one line or waits; the results equal an uninterrupted sweep's, the store holds each
    run once and no temporary file."""
    out = tmp_path / "out"
    case = write_case(tmp_path, tiny_data, out)
    ref = write_case(tmp_path, tiny_data, tmp_path / "ref")
    assert invoke(["sweep", ref, "--quiet"]).exit_code == 0
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-c", "from sciprune.cli import main; main()", "sweep", str(case), "--quiet"]
    procs = [subprocess.Popen(base + extra, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for extra in ([], ["--wait"])]
    outs = [p.communicate(timeout=180)[0] for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes and set(codes) <= {0, 2}, (codes, outs)
    for code, text in zip(codes, outs):
        assert "Traceback" not in text, text
        if code == 2:
            errors = [ln for ln in text.splitlines() if ln.startswith("Error:")]
            assert len(errors) == 1 and "in use" in errors[0] and str(out) in errors[0], text
    waited = [t for c, t in zip(codes, outs) if c == 0 and "waiting for" in t]
    for text in waited:  # the waiter found every run stored by the first process
        assert re.search(r"(\d+) runs, \1 runs already done, 0 to run", text), text
    assert_identical(read_dataset(out / "results.nc"), read_dataset(tmp_path / "ref" / "results.nc"), "concurrent")
    stored = sorted(p.name for p in (out / "sweep" / "runs").iterdir())
    assert stored == sorted(p.name for p in (tmp_path / "ref" / "sweep" / "runs").iterdir())
    assert not [p for p in out.rglob("*") if ".tmp" in p.name]
