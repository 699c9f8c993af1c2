"""``sciprune sweep``: grid keys, the store, equality with ``sciprune run``, resume after SIGKILL,
the Dask engine with a worker killed mid-sweep, and bad case files rejected before any run."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from sciprune.cli import cli
from sciprune.config import load_case
from sciprune.pipeline import run_case
from sciprune.results import read_dataset
from sciprune.sweep import SweepStore, build_grid, run_sweep

ROOT = Path(__file__).resolve().parents[1]
CI_CASE = ROOT / "cases" / "noise_robustness_ci.toml"


def assert_same(a, b, rtol: float, what: str = "") -> None:
    """Same variables, dims and coordinates; values equal to ``rtol``; says where they differ."""
    assert set(a.data_vars) == set(b.data_vars), f"{what}: variables differ: {set(a.data_vars) ^ set(b.data_vars)}"
    for name in a.coords:
        assert list(a[name].values) == list(b[name].values), f"{what}: coordinate {name} differs"
    for v in a.data_vars:
        assert a[v].dims == b[v].dims, f"{what}: {v} dims {a[v].dims} != {b[v].dims}"
        x, y = a[v].values.astype(float), b[v].values.astype(float)
        assert not np.isnan(x).any() and not np.isnan(y).any(), f"{what}: {v} has missing runs"
        bad = ~np.isclose(x, y, rtol=rtol, atol=0)
        assert not bad.any(), f"{what}: {v} differs at {np.argwhere(bad)[:3].tolist()}: {x[bad][:3]} vs {y[bad][:3]}"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A working folder for the outputs and the CI case's data file (made by the first sweep)."""
    return tmp_path_factory.mktemp("sweep")


def ci_case(work: Path, **overrides):
    """The CI case with its data file in ``work`` (keys depend on the data path, so one for all)."""
    return load_case(CI_CASE, {"data.file": str(work / "data.h5"), **overrides})


def ci_toml(work: Path, text: str | None = None) -> Path:
    """The CI case file as ci_case sees it, with one seed (44 runs), written into ``work``."""
    text = (text or CI_CASE.read_text()).replace("data/diffusion_sorption_32x21.h5", str(work / "data.h5"))
    path = work / "ci_one_seed.toml"
    path.write_text(text.replace("seeds = [0, 1]", "seeds = [0]"))
    return path


@pytest.fixture(scope="module")
def reference(work):
    """An uninterrupted local sweep of the CI case: (case, results Dataset, output folder)."""
    case = ci_case(work, output=str(work / "ref"))
    path = run_sweep(case, show_progress=False, echo=lambda s: None)
    return case, read_dataset(path), work / "ref"


SHA = "0" * 64  # a data content hash for the grid-only tests


def test_grid_keys_ignore_output_and_device_but_not_settings_or_data():
    a = build_grid(load_case(CI_CASE), data_sha256=SHA)
    b = build_grid(load_case(CI_CASE, {"output": "elsewhere", "device": "cuda", "name": "other"}), data_sha256=SHA)
    assert [r.key for r in a] == [r.key for r in b]
    assert len({r.key for r in a}) == len(a) == 2 * 2 * 2 * (1 + 4 * 2 + 2)
    c = build_grid(load_case(CI_CASE, {"finetune.epochs": 11}), data_sha256=SHA)
    changed = {r.kind for r, s in zip(a, c) if r.key != s.key}
    assert changed == {"prune"}  # fine-tuning changes pruning runs only
    d = build_grid(load_case(CI_CASE, {"train.lr": 0.02}), data_sha256=SHA)
    assert all(r.key != s.key for r, s in zip(a, d))
    e = build_grid(load_case(CI_CASE), data_sha256="1" * 64)  # same settings, other data contents
    assert all(r.key != s.key and r.settings == s.settings for r, s in zip(a, e))


def test_store_roundtrip_exact_and_keyed_on_data(tmp_path):
    store = SweepStore(tmp_path)
    run = build_grid(load_case(CI_CASE), data_sha256=SHA)[1]
    store.put(run, {"pruned": {"x": 0.1 + 0.2}, "finetuned": {"x": 1 / 3}, "sparsity": 0.5}, data_sha256=SHA)
    (store.runs_dir / ".half.json.123.tmp").write_text('{"key": ')
    records, damaged = store.scan(["x"])
    rec = records[run.key]
    assert rec["pruned"]["x"] == 0.1 + 0.2 and rec["finetuned"]["x"] == 1 / 3  # exact float64
    assert rec["method"] == run.label and rec["ratio"] == run.ratio
    assert rec["data_sha256"] == SHA and rec["settings"] == run.settings and not damaged
    assert list(store.runs_dir.glob(".*.tmp"))  # scanning deletes nothing: only the lock holder cleans


def test_sweep_equals_run_case_float64(reference, work):
    """Same numbers as the per-model loop of ``sciprune run`` (ensemble == fit up to rounding)."""
    case, ref, out = reference
    narrow = {"narrow": {"widths": [8, 8], "activation": "tanh"}}  # one of the two, to save time
    one = ci_case(work, output=str(work / "run"), seeds=[0], architectures=narrow)
    run = read_dataset(run_case(one, show_progress=False, echo=lambda s: None))
    sweep = ref.sel(seed=[0], arch=["narrow"])
    assert_same(sweep, run, rtol=1e-8, what="sweep vs run")
    pruned = [v for v in ref.data_vars if "stage" in ref[v].dims]
    for v in pruned:  # pruning a dense model is deterministic: only training rounding remains
        np.testing.assert_allclose(sweep[v].sel(stage="pruned"), run[v].sel(stage="pruned"), rtol=1e-10)
    # the same case again: everything is found in the store, nothing recomputed
    again = run_sweep(case, show_progress=False, echo=(msgs := []).append)
    assert msgs == [f"{case.name}: 88 runs, 88 runs already done, 0 to run"]
    assert_same(read_dataset(again), ref, rtol=0, what="rerun")
    r = CliRunner().invoke(cli, ["report", str(again), "--out", str(work / "report")])
    assert r.exit_code == 0, r.output


def test_resume_after_sigkill(reference, work):
    case, ref, _ = reference
    out = work / "killed"
    cmd = [sys.executable, "-c", "from sciprune.cli import main; main()", "sweep", str(ci_toml(work)),
           "--output", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    runs = out / "sweep" / "runs"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None and not list(runs.glob("*.json")):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    n_before = len(list(runs.glob("*.json")))
    assert 0 < n_before < 44, f"the kill did not land mid-sweep ({n_before} runs stored)"
    models = {p: p.stat().st_mtime_ns for p in (out / "sweep" / "models").glob("*.pt")}
    assert models  # dense runs are stored after their network
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    n = int(re.search(r"(\d+) runs already done", done.stdout).group(1))
    assert n == n_before
    assert all(p.stat().st_mtime_ns == t for p, t in models.items())  # stored dense networks not retrained
    files = list(runs.glob("*.json"))
    keys = {r.key for r in build_grid(case, data_sha256=ref.attrs["data_sha256"]) if r.seed == 0}
    assert len(files) == 44 and {p.stem for p in files} == keys
    assert not list(runs.glob(".*.tmp"))
    assert_same(read_dataset(out / "results.nc"), ref.sel(seed=[0]), rtol=1e-12, what="resumed vs uninterrupted")


def test_dask_worker_killed_mid_sweep(reference, work):
    """Two worker processes; one is SIGKILLed while it computes; the results equal the local path's."""
    from distributed import Client, LocalCluster

    from sciprune.sweep import DaskEngine

    case, ref, _ = reference
    dcase = ci_case(work, output=str(work / "dask"), seeds=[0])
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        pids = client.run(os.getpid)
        box: dict = {}

        def go():
            try:
                box["path"] = run_sweep(dcase, engine=DaskEngine(client), show_progress=False, echo=lambda s: None)
            except BaseException as err:  # reported by the main thread
                box["error"] = err

        thread = threading.Thread(target=go)
        thread.start()
        victim, deadline = None, time.time() + 60
        while victim is None and time.time() < deadline and thread.is_alive():
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            if busy and list((work / "dask" / "sweep" / "runs").glob("*.json")):
                victim = busy[0]
            time.sleep(0.02)
        assert victim is not None, "no worker was busy after the first runs were stored"
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive() and "error" not in box, box.get("error")
    with pytest.raises(ProcessLookupError):
        os.kill(pids[victim], 0)
    got = read_dataset(box["path"])
    assert got.attrs["engine"] == "sweep (dask)"
    assert_same(got, ref.sel(seed=[0]), rtol=1e-12, what="dask vs local")
    stored = {p.stem for p in (work / "dask" / "sweep" / "runs").glob("*.json")}
    assert stored == {r.key for r in build_grid(case, data_sha256=ref.attrs["data_sha256"]) if r.seed == 0}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('methods = ["ec", "magnitude", "random"]', 'methods = ["ec", "magic"]'), "unknown method"),
        (lambda t: re.sub(r"\[data.generate\].*?mode = \"accurate\"\n", "", t, flags=re.S)
         .replace("diffusion_sorption_32x21.h5", "missing.h5"), "data.file"),
        (lambda t: t.replace("[baseline]", "[baseline]\nscratchy = true"), "baseline.scratchy: unknown key"),
        (lambda t: t.replace("levels = [0.0, 0.02]", "levels = [-1.0]"), "noise.levels"),
    ],
    ids=["unknown-method", "missing-data", "unknown-key", "bad-noise"],
)
def test_bad_case_rejected_before_any_run(tmp_path, edit, message):
    bad = tmp_path / "bad.toml"
    bad.write_text(edit(CI_CASE.read_text()).replace('file = "data/', f'file = "{tmp_path}/'))
    r = CliRunner().invoke(cli, ["sweep", str(bad), "--output", str(tmp_path / "out"), "--quiet"])
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "out").exists()


def test_cli_options(tmp_path):
    r = CliRunner().invoke(cli, ["sweep", "--help"])
    assert r.exit_code == 0 and "--workers" in r.output and "--scheduler" in r.output and "--quiet" in r.output
    r = CliRunner().invoke(cli, ["sweep", str(CI_CASE), "--workers", "2", "--scheduler", "tcp://x:1"])
    assert r.exit_code == 2 and "not both" in r.output
    r = CliRunner().invoke(cli, ["sweep", str(tmp_path / "nope.toml")])
    assert r.exit_code == 2 and "no such case file" in r.output
