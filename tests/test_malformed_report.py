"""Malformed input to ``sciprune report``: results files that are empty, text, truncated, foreign or
hold an empty or repeated dimension, unknown metrics, and outputs that cannot be written. Each is one
line naming the file or option, exit code 2, and nothing written (no figure, no temporary file)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from malformed import assert_raises_user_error, assert_user_error, invoke, snapshot, tmpfs

from sciprune.report import report
from sciprune.results import write_dataset

DIMS = ("arch", "noise", "seed", "method", "ratio", "stage")


def tiny_results(**sizes) -> xr.Dataset:
    """A study result with one or two labels per dimension (``sizes`` overrides a dimension's length)."""
    coords = {"arch": ["a"], "noise": [0.0], "seed": [0, 1], "method": ["ec", "magnitude"], "ratio": [0.5, 0.9],
              "stage": ["pruned", "finetuned"]}
    for dim, n in sizes.items():
        coords[dim] = coords[dim][:n]
    shape = tuple(len(coords[d]) for d in DIMS)
    rng = np.random.default_rng(0)
    return xr.Dataset({
        "test_mse_clean": (DIMS, rng.lognormal(size=shape)),
        "dense_test_mse_clean": (DIMS[:3], rng.lognormal(size=shape[:3])),
    }, coords=coords)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return write_dataset(tiny_results(), tmp_path_factory.mktemp("good") / "results.nc")


def _bytes(content: bytes):
    def make(folder: Path, good: Path) -> Path:
        p = folder / "results.nc"
        p.write_bytes(content)
        return p
    return make


def _truncated(fraction: float):
    def make(folder: Path, good: Path) -> Path:
        data = good.read_bytes()
        p = folder / "results.nc"
        p.write_bytes(data[: int(len(data) * fraction)])
        return p
    return make


def _dataset(edit):
    def make(folder: Path, good: Path) -> Path:
        return write_dataset(edit(tiny_results()), folder / "results.nc")
    return make


def _plain_hdf5(folder: Path, good: Path) -> Path:
    p = folder / "results.nc"
    with h5py.File(p, "w") as f:
        f["values"] = np.arange(3.0)
        f.create_group("group")
    return p


def _netcdf3(folder: Path, good: Path) -> Path:
    p = folder / "results.nc"
    tiny_results().to_netcdf(p, engine="scipy")
    return p


def _folder(folder: Path, good: Path) -> Path:
    p = folder / "results.nc"
    p.mkdir()
    return p


def _fifo(folder: Path, good: Path) -> Path:
    p = folder / "results.nc"
    os.mkfifo(p)
    return p


def _relabel(dim, labels):
    return lambda ds: ds.assign_coords({dim: labels})


def _with_var(name, dims, values=None):
    def edit(ds):
        shape = tuple(ds.sizes[d] for d in dims)
        ds[name] = (dims, np.ones(shape) if values is None else np.full(shape, values))
        return ds
    return edit


# (what makes RESULTS, extra args, needles of the error line)
BAD_RESULTS = [
    ("missing", lambda folder, good: folder / "none.nc", [], ["none.nc", "no such results file"]),
    ("empty", _bytes(b""), [], ["results.nc", "empty"]),
    ("text", _bytes(b"arch,noise,seed\n1,2,3\n"), [], ["results.nc", "not a readable NetCDF4"]),
    ("binary", _bytes(bytes(range(256)) * 8), [], ["results.nc", "not a readable"]),
    ("hdf5 signature only", _bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64), [], ["results.nc", "not a readable"]),
    ("truncated half", _truncated(0.5), [], ["results.nc", "not a readable"]),
    ("truncated header", _truncated(0.02), [], ["results.nc", "not a readable"]),
    ("truncated tail", _truncated(0.95), [], ["results.nc"]),
    ("folder", _folder, [], ["results.nc", "folder"]),
    ("named pipe", _fifo, [], ["results.nc", "not a regular file"]),
    ("plain hdf5", _plain_hdf5, [], ["results.nc", "not a sciprune study"]),
    ("netcdf3", _netcdf3, [], ["results.nc", "not a readable NetCDF4"]),
    ("other dims", _dataset(lambda ds: xr.Dataset({"x": ("i", [1.0])})), [], ["results.nc", "not a sciprune study"]),
    ("no stage dim", _dataset(lambda ds: ds.isel(stage=0, drop=True)), [], ["results.nc", "stage"]),
    ("no coordinate", _dataset(lambda ds: ds.drop_vars("method")), [], ["results.nc", "method"]),
    *[(f"empty {d}", _dataset(lambda ds, d=d: ds.isel({d: slice(0, 0)})), [], ["results.nc", f"'{d}' dimension is empty"])
      for d in DIMS],
    ("repeated method", _dataset(_relabel("method", ["ec", "ec"])), [], ["results.nc", "'method' labels", "repeat"]),
    ("repeated ratio", _dataset(_relabel("ratio", [0.5, 0.5])), [], ["results.nc", "'ratio' labels"]),
    ("repeated seed", _dataset(_relabel("seed", [3, 3])), [], ["results.nc", "'seed' labels"]),
    ("text noise", _dataset(_relabel("noise", ["low"])), [], ["results.nc", "'noise' labels"]),
    ("nan ratio", _dataset(_relabel("ratio", [0.5, np.nan])), [], ["results.nc", "'ratio' labels"]),
    ("fractional seed", _dataset(_relabel("seed", [0.5, 1.5])), [], ["results.nc", "'seed' labels"]),
    ("unsafe arch label", _dataset(lambda ds: xr.concat([ds, ds.assign_coords(arch=["../../esc"])], "arch")), [],
     ["results.nc", "../../esc"]),
    ("no default metric", _dataset(lambda ds: ds.rename(test_mse_clean="other", dense_test_mse_clean="dense_other")), [],
     ["test_mse_clean", "other"]),
    ("unknown metric", lambda folder, good: good, ["--metric", "bogus"], ["--metric", "bogus"]),
    ("empty metric", lambda folder, good: good, ["--metric", ""], ["--metric"]),
    ("metric on other dims", lambda folder, good: good, ["--metric", "dense_test_mse_clean"], ["--metric"]),
    ("text metric", _dataset(lambda ds: ds.assign(label=(DIMS, np.full(ds["test_mse_clean"].shape, "x")))),
     ["--metric", "label"], ["--metric", "label"]),
    ("unsafe metric name", _dataset(_with_var("a\nb", DIMS)), ["--metric", "a\nb"], ["--metric", "a\\nb"]),
    ("dense on wrong dims", _dataset(lambda ds: ds.assign(dense_test_mse_clean=ds["test_mse_clean"])), [],
     ["dense_test_mse_clean"]),
    ("text scratch", _dataset(_with_var("scratch_test_mse_clean", ("arch", "noise", "seed", "ratio"), "x")), [],
     ["scratch_test_mse_clean"]),
]


@pytest.mark.parametrize("make, args, needles", [c[1:] for c in BAD_RESULTS], ids=[c[0] for c in BAD_RESULTS])
def test_bad_results_refused_and_nothing_written(tmp_path, good, make, args, needles):
    folder = tmp_path / "in"
    folder.mkdir()
    results = make(folder, good)
    out = tmp_path / "out"
    watch = (out, folder, good.parent)
    before = snapshot(*watch)
    assert_user_error(invoke(["report", results, "--out", out, *args]), *needles, watch=watch, before=before)
    # without --out the report goes beside RESULTS: nothing may appear there either
    assert_user_error(invoke(["report", results, *args]), *needles, watch=watch, before=before)


def test_report_library_raises_one_line(tmp_path, good):
    assert_raises_user_error(lambda: report(tmp_path / "none.nc"), "no such results file")
    assert_raises_user_error(lambda: report(good, tmp_path / "o", metric="bogus"), "--metric")
    assert not (tmp_path / "o").exists()


@pytest.fixture
def copy_of(tmp_path, good):
    p = tmp_path / "in" / "results.nc"
    p.parent.mkdir()
    p.write_bytes(good.read_bytes())
    return p


def test_out_under_a_file(tmp_path, copy_of):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    watch = (tmp_path,)
    before = snapshot(*watch)
    assert_user_error(invoke(["report", copy_of, "--out", blocker / "sub"]), "--out", "not a folder",
                      watch=watch, before=before)


def test_out_is_a_file(tmp_path, copy_of):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    before = snapshot(tmp_path)
    assert_user_error(invoke(["report", copy_of, "--out", blocker]), "--out", watch=(tmp_path,), before=before)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anywhere")
@pytest.mark.parametrize("use_default", [False, True], ids=["--out", "beside results"])
def test_unwritable_output_folder(tmp_path, copy_of, use_default):
    target = copy_of.parent if use_default else tmp_path / "locked"
    target.mkdir(exist_ok=True)
    target.chmod(0o555)
    try:
        before = snapshot(tmp_path)
        args = ["report", copy_of] + ([] if use_default else ["--out", target])
        assert_user_error(invoke(args), "not writable", watch=(tmp_path,), before=before)
    finally:
        target.chmod(0o755)


def test_full_disk_leaves_no_partial_file(tmp_path, copy_of):
    """On a 64 kB file system the report cannot be written: exit 2, and the folder as it was."""
    with tmpfs(tmp_path / "small") as mnt:
        out = mnt / "report"
        out.mkdir()
        (out / "keep.txt").write_text("kept")
        before = snapshot(mnt)
        assert_user_error(invoke(["report", copy_of, "--out", out]), str(out), "cannot write the report",
                          watch=(mnt,), before=before)


def test_good_report_writes_exactly_its_files(tmp_path, copy_of):
    out = tmp_path / "new" / "report"
    res = invoke(["report", copy_of, "--out", out])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.iterdir()) == ["ranking.nc", "report.md", "report_test_mse_clean_vs_ratio.png"]
    assert "# Study report" in (out / "report.md").read_text()
