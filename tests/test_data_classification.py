"""Classification data: IDX, HDF5 layouts, conversion, digits default, tasks."""

from __future__ import annotations

import gzip
import json

import h5py
import numpy as np
import pytest
import torch

from sciprune.data import (
    classification_task,
    convert_idx_to_h5,
    describe_file,
    load_classification,
    load_digits_default,
    load_mnist_idx,
    read_classification_h5,
    read_idx,
    write_classification_h5,
    write_idx,
)
from sciprune.errors import DataFormatError, SciPruneError


def _mnist_like(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def _write_idx_by_hand(path, array: np.ndarray, code: int, compress: bool):
    """Independent IDX writer following the format spec, to check read_idx against."""
    header = bytes([0, 0, code, array.ndim]) + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    raw = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    images, labels = _mnist_like(5)
    _write_idx_by_hand(tmp_path / "img", images, 0x08, compress)
    _write_idx_by_hand(tmp_path / "lab", labels.astype(np.uint8), 0x08, compress)
    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "lab"), labels)
    f = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    _write_idx_by_hand(tmp_path / "f", f, 0x0D, compress)
    out = read_idx(tmp_path / "f")
    assert out.dtype == np.float32 and out.dtype.isnative
    np.testing.assert_array_equal(out, f)
    write_idx(tmp_path / "w", f, compress=compress)
    assert (tmp_path / "w").read_bytes() == (tmp_path / "f").read_bytes() or compress
    np.testing.assert_array_equal(read_idx(tmp_path / "w"), f)


def test_idx_bad_magic_and_truncated(tmp_path):
    p = tmp_path / "bad-idx"
    p.write_bytes(b"\x12\x34\x08\x01" + b"\0" * 8)
    with pytest.raises(DataFormatError) as exc:
        read_idx(p)
    assert str(p) in str(exc.value) and "12 34 08 01" in str(exc.value) and "expected 00 00 TT DD" in str(exc.value)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + (10).to_bytes(4, "big") + b"\0" * 5)
    with pytest.raises(DataFormatError, match="payload has 5 bytes; expected 10"):
        read_idx(short)
    with pytest.raises(DataFormatError, match="no such file"):
        read_idx(tmp_path / "missing")


def _mnist_dir(tmp_path, compress: bool):
    d = tmp_path / "mnist"
    d.mkdir()
    tr, te = _mnist_like(30, 1), _mnist_like(10, 2)
    suffix = ".gz" if compress else ""
    for prefix, (im, lab) in (("train", tr), ("t10k", te)):
        write_idx(d / f"{prefix}-images-idx3-ubyte{suffix}", im, compress=compress)
        write_idx(d / f"{prefix}-labels-idx1-ubyte{suffix}", lab.astype(np.uint8), compress=compress)
    return d, tr, te


@pytest.mark.parametrize("compress", [False, True])
def test_load_mnist_idx_and_convert(tmp_path, compress):
    d, tr, te = _mnist_dir(tmp_path, compress)
    images, labels = load_mnist_idx(d, split="test")
    assert images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, te[0])
    np.testing.assert_array_equal(labels, te[1])
    out = convert_idx_to_h5(d, tmp_path / "mnist.h5")
    with h5py.File(out, "r") as h5:
        assert set(h5.keys()) == {"train", "test"} and h5.attrs["pixel_max"] == 255
    im, lab = read_classification_h5(out)  # default: train
    np.testing.assert_array_equal(im, tr[0])
    im, lab = read_classification_h5(out, split="test")
    np.testing.assert_array_equal(lab, te[1])
    assert not list(tmp_path.glob(".mnist.h5.*"))  # no temp file left behind
    assert "train/test layout" in describe_file(out)
    assert "IDX" in describe_file(next(d.glob("train-images*")))


def test_load_mnist_idx_missing_file(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    with pytest.raises(DataFormatError, match=r"empty: no file 'train-images-idx3-ubyte' or 'train-images-idx3-ubyte.gz'"):
        load_mnist_idx(d)


def test_classification_h5_flat_round_trip_and_errors(tmp_path):
    images = np.random.default_rng(0).random((7, 4, 5)).astype(np.float32)
    labels = np.arange(7) % 3
    p = write_classification_h5(tmp_path / "flat.h5", images, labels, name="toy", pixel_max=1.0)
    im, lab = read_classification_h5(p)
    np.testing.assert_array_equal(im, images)
    np.testing.assert_array_equal(lab, labels)
    assert lab.dtype == np.int64
    with pytest.raises(DataFormatError, match="has no group 'test'"):
        read_classification_h5(p, split="test")

    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as h5:
        h5["images"] = images
        h5["labels"] = labels[:5]
    with pytest.raises(DataFormatError, match=r"bad\.h5: key 'labels' has 5 entries; expected 7 to match 'images'"):
        read_classification_h5(bad)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h5:
        h5["x"] = images
    with pytest.raises(DataFormatError, match=r"other\.h5: found keys \['x'\]; expected datasets 'images'"):
        read_classification_h5(other)
    with pytest.raises(SciPruneError, match="expected 7 to match images"):
        write_classification_h5(tmp_path / "w.h5", images, labels[:3])
    assert not (tmp_path / "w.h5").exists()


def test_digits_default_task():
    images, labels = load_digits_default()
    assert images.shape == (1797, 8, 8) and images.max() == 16
    images, labels, ti, tl, prov = load_classification(None)
    assert ti is None and prov["dataset"] == "digits"
    task = classification_task(images, labels, provenance=prov, seed=0)
    assert task.task == "classification" and task.n_classes == 10 and task.in_features == 64
    n = task.provenance["n_train"] + task.provenance["n_val"] + task.provenance["n_test"]
    assert n == 1797 and task.provenance["n_test"] == round(0.2 * 1797)
    X = torch.cat([task.X_train, task.X_val, task.X_test])
    assert X.shape == (1797, 64) and X.min() >= 0 and X.max() == 1.0
    assert task.Y_train.dtype == torch.int64 and task.provenance["pixel_max"] == 16.0
    assert task.input_scaling.scale[0] == 16.0
    json.dumps(task.provenance)
    again = classification_task(images, labels, provenance=prov, seed=0)
    assert torch.equal(again.Y_test, task.Y_test)


def test_classification_task_separate_test_set_and_uint8(tmp_path):
    d, tr, te = _mnist_dir(tmp_path, False)
    images, labels, ti, tl, prov = load_classification(str(d))
    task = classification_task(images, labels, test_images=ti, test_labels=tl, provenance=prov, val_fraction=0.2)
    assert task.provenance["n_test"] == 10 and task.provenance["n_val"] == 6 and task.provenance["n_train"] == 24
    assert task.provenance["pixel_max"] == 255.0
    np.testing.assert_allclose(task.X_test.numpy(), te[0].reshape(10, -1) / 255.0, rtol=1e-6)
    h5path = convert_idx_to_h5(d, tmp_path / "m.hdf5")
    im2, lab2, ti2, tl2, prov2 = load_classification(h5path)
    np.testing.assert_array_equal(ti2, ti)
    assert prov2["dataset"] == "hdf5" and prov2["pixel_max"] == 255


def test_classification_task_validation_and_sources(tmp_path):
    images, labels = np.zeros((10, 2, 2)), np.arange(10) % 2
    with pytest.raises(SciPruneError, match="must match"):
        classification_task(images, labels[:4])
    with pytest.raises(SciPruneError, match="non-negative integers"):
        classification_task(images, labels - 1)
    with pytest.raises(SciPruneError, match="leave no training"):
        classification_task(images, labels, val_fraction=0.5, test_fraction=0.5)
    with pytest.raises(DataFormatError, match="no such file or directory"):
        load_classification(str(tmp_path / "nothing"))
    other = tmp_path / "data.csv"
    other.write_text("1,2")
    with pytest.raises(DataFormatError, match="unknown classification source"):
        load_classification(other)
