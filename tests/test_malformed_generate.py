"""Malformed input to ``sciprune generate diffusion-sorption`` (issue 9, items 7 and 9).

Every case runs the command in-process and asserts the promise of the boundary: exit code 2, one
``Error:`` line naming the offending option, value or path, no traceback, and the folder exactly
as before (no partial, temporary or lock file). Sizes that would not fit are refused before
anything is allocated, with the estimate. A full disk is simulated with a small tmpfs (root only;
skipped elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from malformed import assert_user_error, invoke, snapshot, tmpfs

from sciprune.data import diffsorp_writing
from sciprune.data.diffsorp import generate

GEN = ["generate", "diffusion-sorption"]


def gen(out: Path | str, *options: str):
    """``sciprune generate diffusion-sorption --out OUT --nt 5 --workers 1 OPTIONS``."""
    return invoke([*GEN, "--out", str(out), "--nt", "5", "--workers", "1", *options])


# ---------------------------------------------------------------------------------------------
# Options: refused before any file or folder is made

BIG = str(10**8)
OPTION_CASES = [
    (["--samples", "0"], ["n_samples", "got 0"]),
    (["--samples", "-3"], ["n_samples", "-3"]),
    (["--samples", "abc"], ["--samples", "abc"]),
    (["--samples", "1e3"], ["--samples", "1e3"]),
    (["--samples", BIG, "--nx", "1000"], ["disk", f"{BIG} sample(s)", "nx = 1000"]),  # ~37 TiB
    (["--samples", str(2**33)], ["first_seed + n_samples", "2**32"]),
    (["--nx", "2"], ["nx must be an integer >= 3", "got 2"]),
    (["--nx", "0"], ["nx", "got 0"]),
    (["--nx", "-64"], ["nx", "-64"]),
    (["--nx", "1.5"], ["--nx", "1.5"]),
    (["--nx", str(10**9), "--nt", str(10**4)], ["memory", "nx = 1000000000"]),
    (["--nx", str(10**13)], ["memory", "nx = 10000000000000"]),
    (["--samples", str(10**7), "--nx", str(10**5)], ["disk", "nx = 100000"]),
    (["--nt", "1"], ["nt must be an integer >= 2", "got 1"]),
    (["--nt", "-1"], ["nt", "-1"]),
    (["--nt", "x"], ["--nt", "x"]),
    (["--nt", str(10**12)], ["memory", "nt = 1000000000000"]),
    (["--workers", "0"], ["workers", "got 0"]),
    (["--workers", "-2"], ["workers", "-2"]),
    (["--workers", str(10**6)], ["workers", "[1, 4096]", "1000000"]),
    (["--workers", "two"], ["--workers", "two"]),
    (["--workers", "4096", "--samples", "131072", "--nx", str(10**5)], ["memory", "4096 worker"]),
    (["--first-seed", "-1"], ["first_seed", "-1"]),
    (["--first-seed", str(2**32)], ["2**32", str(2**32)]),
    (["--first-seed", str(2**32 - 1), "--samples", "2"], ["2**32", str(2**32)]),
    (["--first-seed", str(10**30)], ["2**32", str(10**30)]),
    (["--first-seed", "x"], ["--first-seed", "x"]),
    (["--mode", "fast"], ["--mode", "fast"]),
]


@pytest.mark.parametrize("options, needles", OPTION_CASES, ids=[" ".join(o)[:40] for o, _ in OPTION_CASES])
def test_bad_option_is_one_line_and_writes_nothing(tmp_path, options, needles):
    out = tmp_path / "new" / "folder" / "data.h5"  # a missing parent must not be made either
    before = snapshot(tmp_path)
    assert_user_error(gen(out, *options), *needles, watch=(tmp_path,), before=before)


# ---------------------------------------------------------------------------------------------
# Output paths


def _folder(tmp: Path) -> Path:
    (tmp / "folder").mkdir()
    return tmp / "folder"


def _parent_is_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file" / "data.h5"


def _ancestor_is_a_file(tmp: Path) -> Path:
    (tmp / "file").write_text("x")
    return tmp / "file" / "a" / "b" / "data.h5"


def _text_file(tmp: Path) -> Path:
    (tmp / "notes.h5").write_text("my notes, not HDF5")
    return tmp / "notes.h5"


def _foreign_hdf5(tmp: Path) -> Path:
    with h5py.File(tmp / "pde.h5", "w") as f:  # PDEBench's tensor style, made by someone else
        f["tensor"] = np.zeros((2, 3, 4), np.float32)
    return tmp / "pde.h5"


def _foreign_damaged_hdf5(tmp: Path) -> Path:
    with h5py.File(tmp / "big.h5", "w") as f:
        f["tensor"] = np.zeros((64, 64), np.float32)
    raw = (tmp / "big.h5").read_bytes()
    (tmp / "big.h5").write_bytes(raw[:700])  # truncated, and not ours: never replaced
    return tmp / "big.h5"


def _ours_with_other_grid(tmp: Path) -> Path:
    generate(tmp / "ours.h5", n_samples=1, nx=8, nt=5, workers=1)
    return tmp / "ours.h5"


def _fifo(tmp: Path) -> Path:
    os.mkfifo(tmp / "pipe.h5")
    return tmp / "pipe.h5"


def _empty(tmp: Path) -> str:
    return ""


PATH_CASES = [
    (_folder, ["is a folder"]),
    (_parent_is_a_file, ["file", "is not a folder"]),
    (_ancestor_is_a_file, ["file", "is not a folder"]),
    (_text_file, ["notes.h5", "not an HDF5 file", "left untouched"]),
    (_foreign_hdf5, ["pde.h5", "not written by sciprune"]),
    (_foreign_damaged_hdf5, ["big.h5", "not an HDF5 file"]),
    (_ours_with_other_grid, ["ours.h5", "cannot resume", "nx: file has 8"]),
    (_fifo, ["pipe.h5", "not a regular file"]),
    (_empty, ["non-empty path"]),
]


@pytest.mark.parametrize("make, needles", PATH_CASES, ids=[m.__name__.strip("_") for m, _ in PATH_CASES])
def test_bad_output_path_is_one_line_and_changes_nothing(tmp_path, make, needles):
    out = make(tmp_path)
    before = snapshot(tmp_path)
    assert_user_error(gen(out, "--nx", "16"), *needles, watch=(tmp_path,), before=before)


def test_nul_byte_in_out_is_one_line(tmp_path):
    before = snapshot(tmp_path)
    assert_user_error(gen(str(tmp_path / "a\x00b.h5")), "NUL", watch=(tmp_path,), before=before)


def test_nul_byte_refused_by_the_library(tmp_path):
    from malformed import assert_raises_user_error

    assert_raises_user_error(lambda: generate(str(tmp_path / "a\x00b.h5"), n_samples=1, nx=8, nt=3),
                             "NUL")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Unwritable folders and full disks (tmpfs; root only)


def test_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    if os.geteuid() == 0:  # root may write anywhere, except on a read-only file system
        with tmpfs(folder, "ro,size=64k"):
            before = snapshot(tmp_path)
            assert_user_error(gen(folder / "data.h5"), "not writable", watch=(tmp_path,), before=before)
        return
    folder.mkdir()
    folder.chmod(0o500)
    try:
        before = snapshot(tmp_path)
        assert_user_error(gen(folder / "data.h5"), "not writable", watch=(tmp_path,), before=before)
    finally:
        folder.chmod(0o700)


def test_full_disk_is_refused_with_the_estimate_before_writing(tmp_path):
    with tmpfs(tmp_path / "small", "size=64k") as small:
        before = snapshot(small)
        line = assert_user_error(gen(small / "data.h5", "--samples", "5", "--nx", "64", "--nt", "101"),
                                 "disk", "need about", "free", watch=(small,), before=before)
        assert "KiB" in line


def _fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` with one file; returns it."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError:
            pass
    return filler


def test_disk_filling_up_while_writing_keeps_finished_samples(tmp_path, monkeypatch):
    """Another program fills the disk after the first sample: one line (no crash inside HDF5), the
    finished sample is kept, no temporary file is left, and the same command completes the file
    once there is space, equal to an uninterrupted one."""
    with tmpfs(tmp_path / "small", "size=512k") as small:
        original = diffsorp_writing._write_sample
        filled = []

        def fill_after_first(*args, **kwargs):
            original(*args, **kwargs)
            if not filled:
                filled.append(_fill(small))

        monkeypatch.setattr(diffsorp_writing, "_write_sample", fill_after_first)
        out = small / "data.h5"
        opts = ["--samples", "3", "--nx", "64", "--nt", "101"]
        assert_user_error(gen(out, *opts), "data.h5", "writing failed", "no space left",
                          "1 of 3 samples are complete")
        assert sorted(p.name for p in small.iterdir()) == ["data.h5", "data.h5.lock", "filler"]
        with h5py.File(out, "r") as f:
            assert sorted(f) == ["0000"]
        monkeypatch.setattr(diffsorp_writing, "_write_sample", original)
        filled[0].unlink()
        assert gen(out, *opts).exit_code == 0
        reference = generate(tmp_path / "reference.h5", n_samples=3, nx=64, nt=101, workers=1)
        with h5py.File(out, "r") as f, h5py.File(reference, "r") as g:
            assert sorted(f) == sorted(g) == ["0000", "0001", "0002"]
            for name in f:
                assert f[name]["data"][()].tobytes() == g[name]["data"][()].tobytes()


def test_disk_full_before_the_first_sample_leaves_no_data_file(tmp_path, monkeypatch):
    """The disk fills up right after the new (empty) file is made: the file this command made is
    removed again; only the lock file stays (filelock keeps it on purpose)."""
    with tmpfs(tmp_path / "small", "size=256k") as small:
        original = diffsorp_writing._new_file

        def fill_after_creating(path, expected):
            original(path, expected)
            _fill(small)

        monkeypatch.setattr(diffsorp_writing, "_new_file", fill_after_creating)
        assert_user_error(gen(small / "data.h5", "--nx", "64", "--nt", "101"), "writing failed",
                          "no space left", "no file was kept")
        assert sorted(p.name for p in small.iterdir()) == ["data.h5.lock", "filler"]
