"""Interrupted generation of a case's data file (issue 9, item 4).

``sciprune run`` and ``sciprune sweep`` make a missing diffusion-sorption file from
``[data.generate]``. A Ctrl-C or a kill during that generation, or a file left incomplete by hand
(0 bytes, no groups, a half-written sample, a damaged file of ours), must be completed by the next
start, exactly as ``sciprune generate`` resumes, and the completed file must equal an
uninterrupted generation bit for bit, sample by sample; the rerun's results must equal an
uninterrupted run's. Two processes generating one file at once must not corrupt it.

The interrupted processes are real processes that receive real signals: one ``sciprune run``
subprocess killed from outside at whatever moment it has reached, and forked copies of this test
process (no second import of torch: seconds saved per case) that run the CLI and are signalled
while a sample is half-written. The reruns run in this process.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from helpers import tiny_case

from sciprune.cli import cli
from sciprune.config import load_case
from sciprune.data import diffsorp_writing
from sciprune.data.diffsorp import SIGNATURE, generate
from sciprune.tasks import ensure_data

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, NX, NT = 6, 32, 11
NAMES = [f"{i:04d}" for i in range(SAMPLES)]

def write_case(folder: Path) -> Path:
    """A tiny case whose data file and outputs live in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    case = folder / "case.toml"
    # workers = 2 so that the worker pool is killed too
    generate = {"samples": SAMPLES, "nx": NX, "nt": NT, "mode": "accurate", "workers": 2}
    case.write_text(tiny_case(folder / "out", folder / "data.h5", data={"sample": 1, "generate": generate},
                              noise={"levels": [0.01]}, finetune={"lr": 1e-3, "epochs": 2}))
    return case


def invoke(command: str, case: Path):
    """``sciprune run|sweep CASE --quiet`` in this process; ``run`` without its figures (slow
    matplotlib drawing that has nothing to do with the data or the numbers)."""
    import sciprune.pipeline as pipeline

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "_figures", lambda *a, **k: None, raising=False)
        res = CliRunner().invoke(cli, [command, str(case), "--quiet"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def results(case: Path) -> dict[str, np.ndarray]:
    """The numbers of a study's results.nc (attributes such as paths and hashes left out)."""
    with xr.open_dataset(case.parent / "out" / "results.nc", engine="h5netcdf") as ds:
        return {k: np.asarray(v.values) for k, v in ds.data_vars.items()}


def samples(path: Path) -> dict[str, dict]:
    """Every root member of a data file: datasets and sample attributes."""
    out = {}
    with h5py.File(path, "r") as f:
        for name in f:
            g = f[name]
            out[name] = {
                "data": g["data"][()], "x": g["grid/x"][()], "t": g["grid/t"][()],
                "attrs": {k: g.attrs[k] for k in ("seed", "c0", "config", "complete")},
            }
    return out


def assert_same_samples(path: Path, reference: Path) -> None:
    """Bit for bit, sample by sample; nothing else at the root (no leftover of the interruption)."""
    got, ref = samples(path), samples(reference)
    assert sorted(got) == sorted(ref) == NAMES
    for name in NAMES:
        for key in ("data", "x", "t"):
            a, b = got[name][key], ref[name][key]
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape, (name, key)
            assert a.tobytes() == b.tobytes(), f"{name}/{key} differs"
        assert got[name]["attrs"] == ref[name]["attrs"], name


def assert_same_results(case: Path, reference: dict) -> None:
    got = results(case)
    assert sorted(got) == sorted(reference)
    for k in reference:
        assert got[k].tobytes() == reference[k].tobytes(), f"{k}: {got[k]} vs {reference[k]}"


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> dict:
    """An uninterrupted generation (library) and uninterrupted ``run`` and ``sweep`` of the case."""
    root = tmp_path_factory.mktemp("reference")
    data = generate(root / "library.h5", n_samples=SAMPLES, nx=NX, nt=NT, workers=1)
    out = {"data": data}
    for command in ("run", "sweep"):
        case = write_case(root / command)
        invoke(command, case)
        assert_same_samples(case.parent / "data.h5", data)  # the case makes the library's file
        out[command] = results(case)
    return out


# ---------------------------------------------------------------------------------------------
# Interrupted processes


def _wait_for(predicate, what: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _child(command: str, case: str, marks: str) -> None:
    """A forked copy of this process running ``sciprune COMMAND CASE``: it writes two samples, then
    half-writes the next one (data set created and flushed, never marked complete), says so with
    the file ``marks/half`` and waits there for its signal."""
    os.setpgrp()  # its own process group, which a terminal's Ctrl-C would signal as a whole
    # Ctrl-C as at a terminal: a suite started as a background job (`cmd &` without job control) inherits
    # SIGINT ignored, and Python then installs no KeyboardInterrupt handler; the child would sleep on.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    original = diffsorp_writing._write_sample
    written = []

    def hooked(f, seed, c0, u, *args, **kwargs):
        if len(written) == 2:
            g = f.create_group(f"_partial_{seed:04d}")
            g.create_dataset("data", data=u[..., None])
            f.flush()
            Path(marks, "half").touch()
            time.sleep(600)
        original(f, seed, c0, u, *args, **kwargs)
        written.append(seed)

    diffsorp_writing._write_sample = hooked
    cli.main(args=[command, case, "--quiet"], prog_name="sciprune")


@pytest.mark.parametrize("command", ["run", "sweep"])
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_signal_while_generating_then_rerun_completes(tmp_path, ref, command, sig):
    case = write_case(tmp_path)
    data = tmp_path / "data.h5"
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = mp.get_context("fork").Process(target=_child, args=(command, str(case), str(marks)))
    proc.start()
    try:
        _wait_for(lambda: (marks / "half").exists() or not proc.is_alive(), "a half-written sample")
        assert proc.is_alive(), f"the child ended early with exit code {proc.exitcode}"
        os.killpg(proc.pid, sig)
        proc.join(60)
    finally:
        if proc.is_alive():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.join()
    # SIGKILL: killed; SIGINT: click's "Aborted!" (exit code 1) after KeyboardInterrupt.
    assert proc.exitcode == (-signal.SIGKILL if sig == signal.SIGKILL else 1)
    with h5py.File(data, "r") as f:  # the interruption left an incomplete file
        keys = sorted(f.keys())
    assert len([k for k in keys if k.isdigit()]) == 2 and any(k.startswith("_partial_") for k in keys), keys
    assert not list(tmp_path.glob(".*sciprune-tmp"))
    invoke(command, case)
    assert_same_samples(data, ref["data"])
    assert_same_results(case, ref[command])


SLOW_CLI = """\
import sys, time
from pathlib import Path
import sciprune.data.diffsorp_writing as d

original, marks = d._write_sample, Path(sys.argv[1])

def slow(f, seed, *args, **kwargs):  # a sample every 0.3 s, so a kill lands during generation
    original(f, seed, *args, **kwargs)
    (marks / str(seed)).touch()
    time.sleep(0.3)

d._write_sample = slow
from sciprune.cli import main
sys.argv = ["sciprune"] + sys.argv[2:]
main()
"""


def test_sigkill_of_a_real_run_process_then_rerun_completes(tmp_path, ref):
    """``sciprune run`` in its own interpreter, killed (with its workers) once it has written two
    samples, wherever it then is; the normal rerun completes the file and equals an
    uninterrupted run."""
    case = write_case(tmp_path)
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "slow_cli.py"
    script.write_text(SLOW_CLI)
    proc = subprocess.Popen([sys.executable, str(script), str(marks), "run", str(case), "--quiet"],
                            cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(list(marks.iterdir())) >= 2 or proc.poll() is not None, "two samples")
        assert proc.poll() is None, proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with h5py.File(tmp_path / "data.h5", "r") as f:
        assert len([k for k in f if k.isdigit() and "complete" in f[k].attrs]) < SAMPLES
    invoke("run", case)
    assert_same_samples(tmp_path / "data.h5", ref["data"])
    assert_same_results(case, ref["run"])


# ---------------------------------------------------------------------------------------------
# Incomplete files found at start


def _zero_bytes(path: Path, ref: Path) -> None:
    path.write_bytes(b"")


def _groupless_by_hand(path: Path, ref: Path) -> None:
    h5py.File(path, "w").close()


def _ours_without_groups(path: Path, ref: Path) -> None:
    generate(path, n_samples=1, nx=NX, nt=NT, workers=1)
    with h5py.File(path, "a") as f:
        del f["0000"]


def _copy(path: Path, ref: Path) -> None:
    path.write_bytes(ref.read_bytes())


def _partial_group(path: Path, ref: Path) -> None:
    _copy(path, ref)
    with h5py.File(path, "a") as f:
        f.move("0003", "_partial_0003")
        del f["_partial_0003/grid"]
        del f["0005"]


def _named_group_never_marked_complete(path: Path, ref: Path) -> None:
    _copy(path, ref)
    with h5py.File(path, "a") as f:
        del f["0002"].attrs["complete"]
        f["0002/data"][0, 0, 0] = 123.0  # whatever it holds, it is not trusted


def _complete_marker_but_no_grid(path: Path, ref: Path) -> None:
    _copy(path, ref)
    with h5py.File(path, "a") as f:
        del f["0004/grid"]


def _damaged_file_of_ours(path: Path, ref: Path) -> None:
    raw = ref.read_bytes()
    assert raw.startswith(SIGNATURE)
    path.write_bytes(raw[: len(raw) // 3])  # a kill mid-write that left the HDF5 structure unreadable


def _orphan_temp_and_missing_samples(path: Path, ref: Path) -> None:
    generate(path, n_samples=2, nx=NX, nt=NT, workers=1)
    (path.parent / f".{path.name}.sciprune-tmp").write_bytes(b"half a new file")


STATES = [_zero_bytes, _groupless_by_hand, _ours_without_groups, _partial_group,
          _named_group_never_marked_complete, _complete_marker_but_no_grid, _damaged_file_of_ours,
          _orphan_temp_and_missing_samples]


@pytest.mark.parametrize("make", STATES, ids=[m.__name__.strip("_") for m in STATES])
def test_incomplete_file_is_completed_by_ensure_data(tmp_path, ref, make):
    case = load_case(write_case(tmp_path))
    path = Path(case.data.file)
    make(path, ref["data"])
    assert ensure_data(case.data) is True
    assert_same_samples(path, ref["data"])
    assert not (tmp_path / f".{path.name}.sciprune-tmp").exists()
    assert ensure_data(case.data) is False  # complete now: read, not written


@pytest.mark.parametrize("make", [_zero_bytes, _groupless_by_hand], ids=["zero_bytes", "groupless_by_hand"])
def test_sweep_completes_a_file_left_by_hand(tmp_path, ref, make):
    case = write_case(tmp_path)
    make(tmp_path / "data.h5", ref["data"])
    invoke("sweep", case)
    assert_same_samples(tmp_path / "data.h5", ref["data"])
    assert_same_results(case, ref["sweep"])


def test_foreign_file_with_generate_section_is_one_line_and_untouched(tmp_path):
    """A file the generator did not write is never completed or replaced: the case says how to
    use it as it is."""
    from malformed import assert_raises_user_error

    case = load_case(write_case(tmp_path))
    path = Path(case.data.file)
    with h5py.File(path, "w") as f:
        f["tensor"] = np.zeros((2, 4, 8), np.float32)
    before = path.read_bytes()
    assert_raises_user_error(lambda: ensure_data(case.data), "data.file", str(path),
                             "not written by sciprune", "remove the [data.generate] section")
    assert path.read_bytes() == before


def test_complete_file_is_only_read(tmp_path, ref):
    """A file holding every sample is not opened for writing: bytes and time stamp unchanged, no
    lock file made (so a finished file in a read-only folder can be used)."""
    case = load_case(write_case(tmp_path))
    path = Path(case.data.file)
    _copy(path, ref["data"])
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    assert ensure_data(case.data) is False
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert not Path(f"{path}.lock").exists()


# ---------------------------------------------------------------------------------------------
# Two processes on one file


def _generate_counting(path: str, counts: str, start: float) -> None:
    written = []
    time.sleep(max(0.0, start - time.time()))  # both start together
    generate(path, n_samples=SAMPLES, nx=NX, nt=NT, workers=1,
             progress=lambda done, total: written.append(done))
    Path(counts, str(os.getpid())).write_text(str(len(written)))


def test_two_processes_generating_one_file_do_not_corrupt_it(tmp_path, ref):
    path, counts = tmp_path / "data.h5", tmp_path / "counts"
    counts.mkdir()
    ctx = mp.get_context("fork")
    start = time.time() + 0.3
    procs = [ctx.Process(target=_generate_counting, args=(str(path), str(counts), start)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    # One wrote every sample; the other waited for the lock and found them done.
    assert sorted(int(f.read_text()) for f in counts.iterdir()) == [0, SAMPLES]
    assert_same_samples(path, ref["data"])


def test_resuming_with_other_chunks_gives_the_same_bits(tmp_path, ref):
    """Resuming with other chunks (another set of missing samples) gives the same bits: a sample
    does not depend on the other members of its chunk (batched RODAS4)."""
    path = tmp_path / "data.h5"
    generate(path, n_samples=SAMPLES, nx=NX, nt=NT, workers=1)
    with h5py.File(path, "a") as f:
        for name in ("0001", "0002", "0004"):
            del f[name]
    generate(path, n_samples=SAMPLES, nx=NX, nt=NT, workers=2, batch_size=2)
    assert_same_samples(path, ref["data"])

