"""Malformed data files through ``data info``, ``data convert``, ``train --data`` and the library readers.

Issue 9, items 3, 7, 8 and 9 (data parts): every bad input is one line naming the file and the
key or value, exit code 2 (``SciPruneError`` in the library), no traceback, nothing written, and
for ``train`` the error comes before any training. Each file is built tiny in ``tmp_path``.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import h5py
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st
from malformed import assert_raises_user_error, assert_user_error, invoke, snapshot, tmpfs

from sciprune.data import NoiseModel, classification_task, coordinate_task, load_classification, open_pdebench
from sciprune.data.classification import convert_idx_to_h5, read_idx, write_idx
from sciprune.errors import DataFormatError
from sciprune.metrics import nrmse_field
from sciprune.scaling import Scaling

RNG = np.random.default_rng(0)
U = RNG.random((2, 3, 4))  # (N, Nt, Nx) of a valid tensor file


# ---------------------------------------------------------------------------- HDF5 building blocks
def _group(f, key):
    f.create_group(key)


def _soft(target: str):
    return lambda f, key: f.__setitem__(key, h5py.SoftLink(target))


def _external(path: str = "good.h5", inner: str = "/tensor"):
    return lambda f, key: f.__setitem__(key, h5py.ExternalLink(path, inner))


def _empty(f, key):
    f[key] = h5py.Empty("f8")


def _vlen_str(f, key):
    f.create_dataset(key, data=np.array(["a", "b"], dtype=object), dtype=h5py.string_dtype())


def _raw_storage(f, key):
    f.create_dataset(key, shape=U.shape, dtype="f8", external=[("raw.bin", 0, U.size * 8)])


def _virtual(f, key):
    layout = h5py.VirtualLayout(shape=U.shape, dtype="f8")
    layout[:] = h5py.VirtualSource("good.h5", "tensor", shape=U.shape)
    f.create_virtual_dataset(key, layout)


def _write(path: Path, items: dict) -> Path:
    """An HDF5 file with ``items`` (key -> array, attrs dict under '@', or a callable(f, key))."""
    with h5py.File(path, "w") as f:
        for key, value in items.items():
            if value is None:
                continue
            if key == "@":
                f.attrs.update(value)
            elif callable(value):
                value(f, key)
            else:
                f[key] = value
    return path


def _tensor(**over) -> Callable[[Path], Path]:
    items = {"tensor": U, "x-coordinate": np.linspace(0, 1, 4), "t-coordinate": np.linspace(0, 1, 3)}
    return lambda p: _write(p, {**items, **{k.replace("_", "-"): v for k, v in over.items()}})


def _groups(**over) -> Callable[[Path], Path]:
    items = {"0000/data": U[0][..., None], "0000/grid/x": np.linspace(0, 1, 4), "0000/grid/t": np.linspace(0, 1, 3)}
    return lambda p: _write(p, {**items, **{k.replace(":", "/"): v for k, v in over.items()}})


def _cls(images=None, labels=None, **over) -> Callable[[Path], Path]:
    images = RNG.integers(0, 256, (10, 4, 4), dtype=np.uint8) if images is None else images
    labels = np.arange(10) % 3 if labels is None else labels
    return lambda p: _write(p, {"images": images, "labels": labels, **over})


def _truncated(fraction: float) -> Callable[[Path], Path]:
    def build(p: Path) -> Path:
        _write(p, {"tensor": RNG.random((4, 20, 30)), "x-coordinate": np.linspace(0, 1, 30),
                   "t-coordinate": np.linspace(0, 1, 20)})
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * fraction)])
        return p
    return build


def _corrupt_chunk(p: Path) -> Path:
    with h5py.File(p, "w") as f:
        f.create_dataset("tensor", data=RNG.random((2, 30, 40)), chunks=(1, 30, 40), compression="gzip")
        f["x-coordinate"], f["t-coordinate"] = np.linspace(0, 1, 40), np.linspace(0, 1, 30)
        offset = f["tensor"].id.get_chunk_info(0).byte_offset
    with open(p, "r+b") as fh:
        fh.seek(offset + 10)
        fh.write(b"\xff" * 64)
    return p


def _bytes(data: bytes) -> Callable[[Path], Path]:
    return lambda p: (p.write_bytes(data), p)[1]


def _fifo(p: Path) -> Path:
    os.mkfifo(p)
    return p


def _folder(p: Path) -> Path:
    p.mkdir()
    return p


def _link_to(target_builder) -> Callable[[Path], Path]:
    def build(p: Path) -> Path:
        target = target_builder(p.with_name(p.name + ".target"))
        p.symlink_to(target)
        return p
    return build


def _dangling_symlink(p: Path) -> Path:
    p.symlink_to(p.with_name("nowhere.h5"))
    return p


def _idx_header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + b"".join(int(d).to_bytes(4, "big") for d in dims)


# ---------------------------------------------------------------------------- the catalogue
# name -> (builder, needles in the error line besides the file name). Each is refused by
# ``data info`` and, where marked in TRAIN, by ``train --data`` before training.
PDE_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "truncated_half": (_truncated(0.5), ("truncated",)),
    "truncated_header": (_truncated(0.02), ("truncated",)),
    "corrupt_chunk": (_corrupt_chunk, ("'tensor'", "cannot be read")),
    "tensor_is_group": (_tensor(tensor=_group), ("'tensor'", "group")),
    "tensor_bytes": (_tensor(tensor=np.array([[[b"ab"]]])), ("'tensor'", "string")),
    "tensor_vlen_str": (_tensor(tensor=_vlen_str), ("'tensor'", "object")),
    "tensor_complex": (_tensor(tensor=U + 1j), ("'tensor'", "complex")),
    "tensor_compound": (_tensor(tensor=np.zeros((2, 3, 4), dtype=[("a", "f4"), ("b", "i4")])), ("'tensor'", "compound")),
    "tensor_bool": (_tensor(tensor=U > 0.5), ("'tensor'", "bool")),
    "tensor_dangling": (_tensor(tensor=_soft("/nowhere")), ("'tensor'", "dangling")),
    "tensor_soft_loop": (_tensor(tensor=_soft("/loop"), loop=_soft("/tensor")), ("'tensor'", "loop")),
    "tensor_external_link": (_tensor(tensor=_external()), ("'tensor'", "external link")),
    "tensor_raw_storage": (_tensor(tensor=_raw_storage), ("'tensor'", "other files")),
    "tensor_virtual": (_tensor(tensor=_virtual), ("'tensor'", "other files")),
    "tensor_no_samples": (_tensor(tensor=np.zeros((0, 3, 4))), ("'tensor'", "empty")),
    "tensor_null_space": (_tensor(tensor=_empty), ("'tensor'", "empty")),
    "tensor_nan": (_tensor(tensor=np.where(U > 0.9, np.nan, U)), ("sample 0", "NaN")),
    "tensor_wrong_rank": (_tensor(tensor=U[0]), ("'tensor'", "shape")),
    "x_2d": (_tensor(x_coordinate=np.linspace(0, 1, 4).reshape(2, 2)), ("'x-coordinate'", "shape (2, 2)")),
    "x_scalar": (_tensor(x_coordinate=np.float64(1.0)), ("'x-coordinate'", "shape ()")),
    "x_nan": (_tensor(x_coordinate=np.array([0, np.nan, 0.5, 1])), ("'x-coordinate'", "NaN")),
    "t_inf": (_tensor(t_coordinate=np.array([0, 0.5, np.inf])), ("'t-coordinate'", "NaN/inf")),
    "x_duplicate": (_tensor(x_coordinate=np.array([0, 0.5, 0.5, 1])), ("'x-coordinate'", "repeats 0.5")),
    "x_unsorted": (_tensor(x_coordinate=np.array([0, 0.7, 0.5, 1])), ("'x-coordinate'", "not monotonic")),
    "x_complex": (_tensor(x_coordinate=np.linspace(0, 1, 4) + 0j), ("'x-coordinate'", "complex")),
    "x_strings": (_tensor(x_coordinate=np.array([b"a", b"b", b"c", b"d"])), ("'x-coordinate'", "string")),
    "x_is_group": (_tensor(x_coordinate=_group), ("'x-coordinate'", "group")),
    "x_external": (_tensor(x_coordinate=_external(inner="/x-coordinate")), ("'x-coordinate'", "external link")),
    "x_wrong_length": (_tensor(x_coordinate=np.linspace(0, 1, 5)), ("'x-coordinate'", "length 5")),
    "x_missing": (_tensor(x_coordinate=None), ("'x-coordinate'", "missing")),
    "no_layout": (lambda p: _write(p, {"u": U}), ("found keys ['u']",)),
    "no_keys": (lambda p: _write(p, {}), ("found keys []",)),
    "data_is_group": (_groups(**{"0000:data": _group}), ("'0000/data'", "group")),
    "data_complex": (_groups(**{"0000:data": U[0][..., None] * 1j}), ("'0000/data'", "complex")),
    "data_strings": (_groups(**{"0000:data": np.full((3, 4, 1), b"x")}), ("'0000/data'", "string")),
    "data_dangling": (_groups(**{"0000:data": _soft("/0000/gone")}), ("'0000/data'", "dangling")),
    "data_external": (_groups(**{"0000:data": _external(inner="/0000/data")}), ("'0000/data'", "external link")),
    "data_empty": (_groups(**{"0000:data": np.zeros((3, 0, 1))}), ("'0000/data'", "empty")),
    "data_inf": (_groups(**{"0000:data": np.full((3, 4, 1), np.inf)}), ("sample 0", "NaN/inf")),
    "data_wrong_shape": (_groups(**{"0000:data": np.zeros((3, 5, 1))}), ("'data'", "(3, 5, 1)")),
    "sample_group_external": (lambda p: _write(p, {"0000": _external(inner="/0000")}), ("'0000'", "external link")),
    "grid_x_2d": (_groups(**{"0000:grid:x": np.zeros((2, 2))}), ("'0000/grid/x'", "shape (2, 2)")),
    "grid_t_duplicate": (_groups(**{"0000:grid:t": np.array([0.0, 0.0, 1.0])}), ("'0000/grid/t'", "repeats 0")),
    "grid_x_group": (_groups(**{"0000:grid:x": _group}), ("'0000/grid/x'", "group")),
    "grid_t_missing": (_groups(**{"0000:grid:t": None}), ("'0000'", "'grid/t'")),
}

CLS_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "images_group": (_cls(images=_group), ("'images'", "group")),
    "images_complex": (_cls(images=np.ones((10, 4, 4)) * 1j), ("'images'", "complex")),
    "images_bool": (_cls(images=np.ones((10, 4, 4), dtype=bool)), ("'images'", "bool")),
    "images_strings": (_cls(images=np.full((10, 4, 4), b"x")), ("'images'", "string")),
    "images_2d": (_cls(images=np.ones((10, 16))), ("'images'", "(10, 16)")),
    "images_empty": (_cls(images=np.zeros((0, 4, 4)), labels=np.zeros(0, dtype=np.int64)), ("'images'", "empty")),
    "images_dangling": (_cls(images=_soft("/gone")), ("'images'", "dangling")),
    "labels_float": (_cls(labels=np.arange(10) / 3), ("'labels'", "float")),
    "labels_strings": (_cls(labels=np.array([b"a"] * 10)), ("'labels'", "string")),
    "labels_negative": (_cls(labels=np.arange(10) - 1), ("'labels'", "-1")),
    "labels_2d": (_cls(labels=np.zeros((10, 1), dtype=np.int64)), ("'labels'", "(10, 1)")),
    "labels_count": (_cls(labels=np.arange(7) % 3), ("'labels'", "7 entries", "expected 10")),
    "labels_external": (_cls(labels=_external(inner="/labels")), ("'labels'", "external link")),
    "label_10_of_10": (_cls(labels=np.arange(10) + 1, **{"@": {"n_classes": 10}}), ("label 10", "0 to 9")),
    "n_classes_zero": (_cls(**{"@": {"n_classes": 0}}), ("'n_classes'", "positive integer")),
    "split_test_dangling": (lambda p: _write(p, {
        "train/images": np.zeros((4, 2, 2)), "train/labels": np.arange(4) % 2,
        "test/images": np.zeros((2, 2, 2)), "test/labels": _soft("/gone")}), ("'test/labels'", "dangling")),
}

# Refused when the data are used (train, library): pixel_max is read by the task, not by data info.
PIXEL_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "pixel_max_zero": (_cls(**{"@": {"pixel_max": 0}}), ("'pixel_max'", "positive finite")),
    "pixel_max_negative": (_cls(**{"@": {"pixel_max": -255.0}}), ("'pixel_max'", "-255")),
    "pixel_max_nan": (_cls(**{"@": {"pixel_max": np.nan}}), ("'pixel_max'", "nan")),
    "pixel_max_inf": (_cls(**{"@": {"pixel_max": np.inf}}), ("'pixel_max'", "inf")),
    "pixel_max_text": (_cls(**{"@": {"pixel_max": "255"}}), ("'pixel_max'", "'255'")),
    "pixel_max_below_data": (_cls(**{"@": {"pixel_max": 1.0}}), ("images hold values up to", "pixel_max = 1")),
    "pixel_max_array": (_cls(**{"@": {"pixel_max": np.array([255.0, 1.0])}}), ("'pixel_max'", "[255.0, 1.0]")),
    "test_label_unseen": (lambda p: _write(p, {
        "train/images": np.zeros((6, 2, 2)), "train/labels": np.arange(6) % 3,
        "test/images": np.zeros((2, 2, 2)), "test/labels": np.array([0, 3])}), ("test labels", "label 3", "0 to 2")),
}

SPECIAL_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "fifo": (_fifo, ("FIFO",)),
    "fifo_symlink": (_link_to(_fifo), ("FIFO",)),
    "dangling_symlink": (_dangling_symlink, ("no such file",)),
    "missing": (lambda p: p, ("no such file",)),
    "empty_file": (_bytes(b""), ("empty",)),
    "text_file": (_bytes(b"x,t,u\n0,0,1\n"), ("78 2c 74 2c",)),
    "hdf5_magic_then_garbage": (_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 40), ()),
}

IDX_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "idx_header_truncated": (_bytes(bytes([0, 0, 8, 3, 0, 0])), ("header truncated",)),
    "idx_payload_short": (_bytes(_idx_header(8, (2, 3)) + b"\0" * 5), ("payload has 5 bytes", "expected 6")),
    "idx_payload_long": (_bytes(_idx_header(8, (2, 3)) + b"\0" * 7), ("payload has 7 bytes", "expected 6")),
    "idx_dims_overflow": (_bytes(_idx_header(8, (2**32 - 1,) * 3) + b"\0" * 8), ("4294967295", "memory")),
    "idx_int32_overflow": (_bytes(_idx_header(0x0C, (2**31, 2**31)) + b"\0" * 8), ("2147483648", "memory")),
    "idx_zero_dim": (_bytes(_idx_header(8, (0, 28))), ("shape (0, 28)", "no values")),
    "idx_gzip_garbage": (_bytes(b"\x1f\x8b" + b"garbage" * 4), ("gzip",)),
    "idx_gzip_truncated": (_bytes(gzip.compress(_idx_header(8, (64,)) + bytes(range(64)))[:20]), ("gzip",)),
    "idx_gzip_short_payload": (_bytes(gzip.compress(_idx_header(8, (100,)) + b"\1" * 10)), ("payload has 10 bytes", "expected 100")),
    "idx_gzip_bomb_header": (_bytes(gzip.compress(_idx_header(8, (60000, 28, 28)) + b"\0" * 10)), ("payload has 10 bytes",)),
}

TRAIN_CASES = {**PDE_CASES, **CLS_CASES, **PIXEL_CASES,
               **{k: v for k, v in SPECIAL_CASES.items() if k not in ("empty_file", "text_file")}}
INFO_CASES = {**PDE_CASES, **CLS_CASES, **SPECIAL_CASES, **IDX_CASES}


@pytest.fixture
def good_files(tmp_path: Path, monkeypatch) -> Path:
    """Valid targets for links (``good.h5``), so a refused external link proves it was not followed."""
    _tensor()(tmp_path / "good.h5")
    with h5py.File(tmp_path / "good.h5", "a") as f:
        f["0000/data"], f["0000/grid/x"], f["0000/grid/t"] = U[0][..., None], np.linspace(0, 1, 4), np.linspace(0, 1, 3)
        f["labels"] = np.arange(10) % 3
    (tmp_path / "raw.bin").write_bytes(U.tobytes())
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _build(cases: dict, name: str, folder: Path) -> tuple[Path, tuple[str, ...]]:
    builder, needles = cases[name]
    path = builder(folder / f"{name}.h5")
    return path, (path.name, *needles)


# ---------------------------------------------------------------------------- data info
@pytest.mark.parametrize("name", sorted(INFO_CASES))
def test_data_info_refuses(good_files: Path, name: str):
    path, needles = _build(INFO_CASES, name, good_files)
    before = snapshot(good_files)
    assert_user_error(invoke(["data", "info", path]), *needles, watch=(good_files,), before=before)


@pytest.mark.parametrize("special", ["/dev/null", "/dev/zero"])
def test_data_info_refuses_devices(special: str):
    assert_user_error(invoke(["data", "info", special]), special, "character device")


def test_data_info_refuses_a_folder(tmp_path: Path):
    assert_user_error(invoke(["data", "info", tmp_path]), tmp_path.name, "folder")


# ---------------------------------------------------------------------------- train --data
@pytest.mark.parametrize("name", sorted(TRAIN_CASES))
def test_train_refuses_before_training(good_files: Path, name: str):
    path, needles = _build(TRAIN_CASES, name, good_files)
    before = snapshot(good_files)
    res = invoke(["train", "--data", path, "--epochs", "1", "--widths", "2", "--out", good_files / "m.sciprune"])
    assert_user_error(res, *needles, watch=(good_files,), before=before)
    assert "epoch" not in res.output.lower()


def test_train_refuses_a_device_file(tmp_path: Path):
    res = invoke(["train", "--data", "/dev/zero", "--epochs", "1", "--out", tmp_path / "m.sciprune"])
    assert_user_error(res, "/dev/zero", "character device", watch=(tmp_path,), before=snapshot(tmp_path))


# ---------------------------------------------------------------------------- library readers
@pytest.mark.parametrize("name", sorted(PDE_CASES))
def test_open_pdebench_refuses(good_files: Path, name: str):
    path, needles = _build(PDE_CASES, name, good_files)

    def read():
        with open_pdebench(path) as f:
            coordinate_task(f.sample(0))

    assert_raises_user_error(read, *needles)


@pytest.mark.parametrize("name", sorted({**CLS_CASES, **PIXEL_CASES}))
def test_load_classification_refuses(good_files: Path, name: str):
    path, needles = _build({**CLS_CASES, **PIXEL_CASES}, name, good_files)

    def load():
        images, labels, ti, tl, prov = load_classification(path)
        classification_task(images, labels, test_images=ti, test_labels=tl, provenance=prov)

    assert_raises_user_error(load, *needles)


@pytest.mark.parametrize("name", sorted(k for k in SPECIAL_CASES if k not in ("empty_file", "text_file")))
def test_library_readers_refuse_special_files(good_files: Path, name: str):
    path, needles = _build(SPECIAL_CASES, name, good_files)
    assert_raises_user_error(lambda: open_pdebench(path), *needles)
    assert_raises_user_error(lambda: load_classification(path), *needles)


# ---------------------------------------------------------------------------- IDX
def _mnist(folder: Path, n_train: int = 12, n_test: int = 4, side: int = 4, **replace: bytes | Callable) -> Path:
    """A tiny MNIST-named IDX folder; ``replace`` maps a file stem to its bytes or a builder."""
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 3).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) % 3).astype(np.uint8),
    }
    for name, array in files.items():
        value = replace.get(name.replace("-", "_"))
        if value is None:
            write_idx(folder / name, array)
        elif callable(value):
            value(folder / name)
        else:
            (folder / name).write_bytes(value)
    return folder


IDX_DIR_CASES: dict[str, tuple[dict, tuple[str, ...]]] = {
    "labels_count": ({"train_labels_idx1_ubyte": _idx_header(8, (5,)) + bytes(5)}, ("labels have shape (5,)", "(12,)")),
    "labels_float": ({"train_labels_idx1_ubyte": _idx_header(0x0D, (12,)) + bytes(48)}, ("float32",)),
    "labels_negative": ({"train_labels_idx1_ubyte": _idx_header(0x09, (12,)) + b"\xff" * 12}, ("-1",)),
    "labels_2d": ({"train_labels_idx1_ubyte": _idx_header(8, (12, 1)) + bytes(12)}, ("(12, 1)",)),
    "images_int16": ({"train_images_idx3_ubyte": _idx_header(0x0B, (12, 4, 4)) + bytes(12 * 32)}, ("int16",)),
    "images_2d": ({"train_images_idx3_ubyte": _idx_header(8, (12, 16)) + bytes(12 * 16)}, ("(12, 16)",)),
    "images_bad_magic": ({"train_images_idx3_ubyte": b"\x12\x34\x08\x03" + bytes(40)}, ("12 34 08 03",)),
    "images_gzip_corrupt": ({"train_images_idx3_ubyte": b"\x1f\x8b\x08\x00" + bytes(30)}, ("gzip",)),
    "images_overflow": ({"train_images_idx3_ubyte": _idx_header(8, (2**32 - 1, 2**32 - 1, 9))}, ("memory",)),
    "images_fifo": ({"train_images_idx3_ubyte": lambda p: os.mkfifo(p)}, ("FIFO",)),
    "labels_missing": ({"train_labels_idx1_ubyte": lambda p: None}, ("no file 'train-labels-idx1-ubyte'",)),
    "test_labels_unseen": ({"t10k_labels_idx1_ubyte": _idx_header(8, (4,)) + bytes([0, 1, 2, 7])}, ("label 7", "0 to 2")),
    "test_labels_truncated": ({"t10k_labels_idx1_ubyte": _idx_header(8, (4,)) + bytes(2)}, ("payload has 2 bytes",)),
}

@pytest.mark.parametrize("name", sorted(IDX_DIR_CASES))
@pytest.mark.parametrize("entry", ["convert", "train", "library"])
def test_idx_folder_refused(tmp_path: Path, name: str, entry: str):
    replace, needles = IDX_DIR_CASES[name]
    folder = _mnist(tmp_path / "mnist", **replace)
    (tmp_path / "out").mkdir()
    before = snapshot(tmp_path)
    if entry == "library":
        def load():
            images, labels, ti, tl, prov = load_classification(folder)
            classification_task(images, labels, test_images=ti, test_labels=tl, provenance=prov)
        assert_raises_user_error(load, *needles)
        return
    args = (["data", "convert", folder, tmp_path / "out" / "m.h5"] if entry == "convert" else
            ["train", "--data", folder, "--epochs", "1", "--widths", "2", "--out", tmp_path / "out" / "m.sciprune"])
    assert_user_error(invoke(args), *needles, watch=(tmp_path,), before=before)


@settings(max_examples=60, deadline=None)
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A, 0x00]),
    dims=st.lists(st.one_of(st.integers(0, 6), st.integers(0, 2**32 - 1)), min_size=0, max_size=4),
    payload=st.binary(max_size=96),
    gzipped=st.booleans(),
    cut=st.integers(0, 3),
)
def test_random_idx_headers_read_or_refuse(code, dims, payload, gzipped, cut):
    """Any header: either the array the header promises (size checked) or one DataFormatError line."""
    raw = bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload
    raw = raw[: len(raw) - cut] if cut < len(raw) else raw
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "random-idx"
        path.write_bytes(gzip.compress(raw) if gzipped else raw)
        try:
            array = read_idx(path)
        except DataFormatError as err:
            assert str(path) in str(err) and "\n" not in str(err)
            return
    assert array.shape == tuple(dims) and array.nbytes == len(raw) - 4 - 4 * len(dims) > 0


# ---------------------------------------------------------------------------- data convert: outputs
@pytest.fixture
def mnist(tmp_path: Path) -> Path:
    """Random (incompressible) 28x28 images, about 100 KiB: more than the 64 KiB disk below holds."""
    return _mnist(tmp_path / "mnist", n_train=120, n_test=10, side=28)


def test_convert_parent_is_a_file(mnist: Path, tmp_path: Path):
    (tmp_path / "afile").write_text("x")
    before = snapshot(tmp_path)
    res = invoke(["data", "convert", mnist, tmp_path / "afile" / "m.h5"])
    assert_user_error(res, "OUT", "afile", "not a folder", watch=(tmp_path,), before=before)


def test_convert_out_is_a_folder(mnist: Path, tmp_path: Path):
    (tmp_path / "outdir").mkdir()
    before = snapshot(tmp_path)
    assert_user_error(invoke(["data", "convert", mnist, tmp_path / "outdir"]), "OUT", "outdir", "folder",
                      watch=(tmp_path,), before=before)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_convert_unwritable_folder(mnist: Path, tmp_path: Path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    before = snapshot(tmp_path)
    assert_user_error(invoke(["data", "convert", mnist, locked / "m.h5"]), "OUT", "not writable",
                      watch=(tmp_path,), before=before)


def _tmpfs(mount: Path, options: str):
    with tmpfs(mount, options) as folder:
        yield folder


@pytest.fixture
def full_disk(tmp_path: Path):
    """A 64 KiB tmpfs (root only; skipped elsewhere)."""
    yield from _tmpfs(tmp_path / "full", "size=64k")


@pytest.fixture
def read_only(tmp_path: Path):
    """A read-only tmpfs: not writable even for root (skipped where it cannot be mounted)."""
    yield from _tmpfs(tmp_path / "ro", "ro,size=64k")


def test_convert_to_a_read_only_folder(mnist: Path, read_only: Path):
    before = snapshot(read_only)
    assert_user_error(invoke(["data", "convert", mnist, read_only / "m.h5"]), "OUT", "not writable",
                      watch=(read_only,), before=before)


def test_convert_to_a_full_disk_is_refused_before_writing(mnist: Path, full_disk: Path):
    before = snapshot(full_disk)
    res = invoke(["data", "convert", mnist, full_disk / "m.h5"])
    assert_user_error(res, "m.h5", "not enough disk space", watch=(full_disk,), before=before)


def test_convert_write_failure_leaves_no_temp_file(mnist: Path, full_disk: Path, monkeypatch):
    """Free space reported as plenty, so the write itself hits ENOSPC: one line, no temp file."""
    import sciprune.data._files as files

    monkeypatch.setattr(files.shutil, "disk_usage", lambda p: SimpleNamespace(total=2**40, used=0, free=2**40))
    (full_disk / "filler").write_bytes(b"\0" * 8192)
    before = snapshot(full_disk)
    res = invoke(["data", "convert", mnist, full_disk / "m.h5"])
    assert_user_error(res, "m.h5", "no space left", watch=(full_disk,), before=before)


def test_convert_on_a_full_disk_exits_2_in_a_real_process(mnist: Path, full_disk: Path):
    """The audit saw a segfault (h5py writing to a full disk); a real process must exit 2 cleanly."""
    done = subprocess.run([sys.executable, "-m", "sciprune.cli", "data", "convert", str(mnist), str(full_disk / "m.h5")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and os.listdir(full_disk) == []


def test_convert_writes_n_classes_and_reads_back(mnist: Path, tmp_path: Path):
    out = convert_idx_to_h5(mnist, tmp_path / "m.h5")
    with h5py.File(out) as f:
        assert f.attrs["n_classes"] == 3 and f.attrs["pixel_max"] == 255
    images, labels, ti, tl, prov = load_classification(out)
    assert classification_task(images, labels, test_images=ti, test_labels=tl, provenance=prov).n_classes == 3


# ---------------------------------------------------------------------------- splits, noise, scaling
def _sample(nt: int, nx: int, values=None) -> xr.DataArray:
    u = np.ones((nt, nx)) if values is None else values
    return xr.DataArray(u, dims=("t", "x"), coords={"t": np.arange(nt, dtype=float), "x": np.arange(nx, dtype=float)},
                        attrs={"file": "mem.h5", "sample": 0})


TASK_CASES: dict[str, tuple[Callable[[], object], tuple[str, ...]]] = {
    "one_point": (lambda: coordinate_task(_sample(1, 1)), ("only 1 point ", "at least 2")),
    "test_fraction_no_test": (lambda: coordinate_task(_sample(2, 1), test_fraction=0.2), ("test_fraction 0.2", "of 2 points", "no test")),
    "val_fraction_no_val": (lambda: coordinate_task(_sample(3, 1), test_fraction=0.4, val_fraction=0.1), ("val_fraction 0.1", "of 3 points")),
    "val_leaves_no_train": (lambda: coordinate_task(_sample(2, 2), test_fraction=0.5, val_fraction=0.5), ("no training", "0.5")),
    "time_split_one_level": (lambda: coordinate_task(_sample(1, 5), split="time"), ("Nt = 1",)),
    "uniform_1e308": (lambda: coordinate_task(_sample(4, 4), noise=NoiseModel("uniform", 1e308)), ("noise level 1e+308",)),
    "relative_1e300": (lambda: coordinate_task(_sample(4, 4, np.full((4, 4), 1e10)), noise=NoiseModel("relative-gaussian", 1e300)), ("noise level 1e+300",)),
    "gaussian_1e308": (lambda: coordinate_task(_sample(8, 8), noise=NoiseModel("gaussian", 1e308)), ("noise level 1e+308",)),
    "scaled_targets_overflow": (lambda: coordinate_task(_sample(3, 1, np.array([[1.7e308], [1.7e308], [-1.7e308]])),
                                                        test_fraction=0.34, val_fraction=0), ("overflow",)),
    "complex_sample": (lambda: coordinate_task(_sample(3, 3, np.ones((3, 3)) * 1j)), ("complex",)),
    "duplicate_t": (lambda: coordinate_task(_sample(3, 2).assign_coords(t=[0.0, 1.0, 1.0])), ("coordinate 't'", "repeats 1")),
    "one_image": (lambda: classification_task(np.zeros((1, 2, 2)), np.zeros(1, dtype=int)), ("only 1 image:",)),
    "three_images_no_test": (lambda: classification_task(np.zeros((3, 2, 2)), np.arange(3), test_fraction=0.1, val_fraction=0), ("test_fraction 0.1", "of 3 images")),
    "pixel_max_zero_given": (lambda: classification_task(np.zeros((9, 2, 2)), np.arange(9) % 2, pixel_max=0), ("pixel_max = 0",)),
    "labels_negative": (lambda: classification_task(np.zeros((9, 2, 2)), np.arange(9) - 3), ("-3",)),
    "complex_images": (lambda: classification_task(np.zeros((9, 2, 2)) * 1j, np.arange(9) % 2), ("complex",)),
    "empty_test_set": (lambda: classification_task(np.zeros((9, 2, 2)), np.arange(9) % 2, test_images=np.zeros((0, 2, 2)),
                                                   test_labels=np.zeros(0, dtype=int)), ("at least one item",)),
    "scaling_nan_shift": (lambda: Scaling([np.nan], [1.0]), ("shift must be finite",)),
    "scaling_inf_scale": (lambda: Scaling([0.0], [np.inf]), ("scale must be finite",)),
    "scaling_zero_scale": (lambda: Scaling([0.0], [0.0]), ("non-zero",)),
    "scaling_from_list": (lambda: Scaling.from_dict([1, 2]), ("'shift' and 'scale'",)),
    "scaling_missing_key": (lambda: Scaling.from_dict({"shift": [0.0]}), ("'shift' and 'scale'",)),
    "scaling_text": (lambda: Scaling.from_dict({"shift": ["a"], "scale": [1.0]}), ("shift", "'a'")),
    "scaling_nested": (lambda: Scaling.from_dict({"shift": [[0.0]], "scale": [[1.0]]}), ("shift",)),
    "standardize_nan": (lambda: Scaling.standardize(np.array([[1.0], [np.nan]])), ("NaN/inf",)),
    "standardize_empty": (lambda: Scaling.standardize(np.zeros((0, 2))), ("at least one row",)),
    "nrmse_shapes": (lambda: nrmse_field(np.zeros((3, 4)), np.zeros((4, 3))), ("pred (3, 4)", "target (4, 3)")),
    "nrmse_1d": (lambda: nrmse_field(np.zeros(4), np.zeros(4)), ("pred", "shape (4,)")),
    "nrmse_3d_target": (lambda: nrmse_field(np.zeros((2, 2)), np.zeros((2, 2, 1))), ("target", "(2, 2, 1)")),
    "nrmse_empty": (lambda: nrmse_field(np.zeros((0, 3)), np.zeros((0, 3))), ("(0, 3)",)),
    "nrmse_text": (lambda: nrmse_field([["a"]], [["b"]]), ("real numbers",)),
}


@pytest.mark.parametrize("name", sorted(TASK_CASES))
def test_library_tasks_refuse(name: str):
    call, needles = TASK_CASES[name]
    assert_raises_user_error(call, *needles)


@pytest.mark.parametrize(("scale", "args", "needles"), [
    (1e306, ["--noise", "relative-gaussian", "--noise-level", "1000"], ("noise level 1000", "overflow")),
    (1.7e308, ["--noise", "relative-gaussian", "--noise-level", "0.5"], ("noise level 0.5", "overflow")),
    (1e307, ["--noise", "relative-gaussian", "--noise-level", "1e15"], ("noise level 1e+15", "overflow")),
])
def test_train_refuses_noise_that_overflows(tmp_path: Path, scale: float, args: list[str], needles: tuple[str, ...]):
    data = _tensor(tensor=U * scale)(tmp_path / "u.h5")
    before = snapshot(tmp_path)
    res = invoke(["train", "--data", data, *args, "--epochs", "1", "--widths", "2", "--out", tmp_path / "m.sciprune"])
    assert_user_error(res, *needles, watch=(tmp_path,), before=before)


@pytest.mark.parametrize(("nt", "nx", "needles"), [
    (1, 1, ("only 1 point ",)),
    (2, 1, ("test_fraction 0.2", "of 2 points")),
])
def test_train_refuses_data_too_small_to_split(tmp_path: Path, nt: int, nx: int, needles: tuple[str, ...]):
    data = _write(tmp_path / "small.h5", {"tensor": np.ones((1, nt, nx)), "x-coordinate": np.arange(nx, dtype=float),
                                          "t-coordinate": np.arange(nt, dtype=float)})
    before = snapshot(tmp_path)
    res = invoke(["train", "--data", data, "--epochs", "1", "--widths", "2", "--out", tmp_path / "m.sciprune"])
    assert_user_error(res, *needles, watch=(tmp_path,), before=before)


def test_scaling_near_the_float64_limit_is_finite():
    """Finite data always get a finite scaling (no false refusal of data above 1e154)."""
    big = np.array([[1e300], [-1.7e308], [1.7e308], [0.0]])
    for sc in (Scaling.standardize(big), Scaling.to_unit_interval(big)):
        assert np.all(np.isfinite(sc.shift)) and np.all(np.isfinite(sc.scale)) and sc.scale[0] > 1e307
    np.testing.assert_allclose(Scaling.standardize(big).scale, [np.std(big / 1e308) * 1e308], rtol=1e-12)
    task = coordinate_task(_sample(3, 2).assign_coords(x=[-1.7e308, 1.7e308]))
    assert float(task.X_train[:, 0].abs().max()) == 1.0


def test_constant_data_scale_by_one():
    """Documented: a constant target (standard deviation 0) is scaled by 1 and maps to 0."""
    task = coordinate_task(_sample(4, 4, np.full((4, 4), 3.0)))
    assert task.output_scaling.scale.tolist() == [1.0] and task.output_scaling.shift.tolist() == [3.0]
    assert float(task.Y_train.abs().max()) == 0.0
