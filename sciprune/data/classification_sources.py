"""Image-classification sources: MNIST / Fashion-MNIST IDX files, an HDF5 layout, sklearn digits.

HDF5 layout written by :func:`write_classification_h5` and read by
:func:`read_classification_h5` (two forms, both accepted):

* flat: datasets ``images`` (N, H, W) uint8 or float and ``labels`` (N,) integer;
* split: groups ``train`` and ``test``, each holding ``images`` and ``labels`` as above
  (what :func:`convert_idx_to_h5` writes).

Root attributes (``source``, ``pixel_max``, ``n_classes`` ...) are copied into provenance;
``pixel_max`` (the value of a white pixel) must be a positive finite number and ``n_classes`` a
positive integer above every label. IDX files are read by :mod:`sciprune.data._idx`; every input
file is opened through :mod:`sciprune.data._files`. :func:`load_classification` picks the reader
for a name or path; the task (scaling, split) is built by :mod:`sciprune.data.classification`,
which re-exports every public name here.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ..errors import DataFormatError, SciPruneError
from ..outputs import prepare_output
from ._files import attrs as h5_attrs
from ._files import dataset, node, open_h5, read, regular_file, write_atomic
from ._idx import read_idx, write_idx

__all__ = [
    "read_idx", "write_idx", "load_mnist_idx", "write_classification_h5", "read_classification_h5",
    "convert_idx_to_h5", "classification_h5_splits", "load_digits_default", "load_classification",
    "check_labels",
]

_MNIST_PREFIX = {"train": "train", "test": "t10k"}
_LAYOUT = "expected datasets 'images' (N, H, W) and 'labels' (N,), or groups 'train'/'test' holding them"


def check_labels(labels: np.ndarray, where: str, n_classes: int | None = None) -> np.ndarray:
    """``labels`` as int64 (N,) after checking: integers, one axis, not empty, in [0, n_classes).

    Args:
        where: the file and key (or "labels") for messages. n_classes: the upper bound when known.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise SciPruneError(f"{where}: labels must be non-negative integers of shape (N,), got {labels.dtype} {labels.shape}")
    if labels.size == 0:
        raise SciPruneError(f"{where}: no labels (an empty set)")
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        i = int(np.argmin(labels))
        raise SciPruneError(f"{where}: labels must be non-negative integers, got {low} at index {i}")
    if n_classes is not None and high >= n_classes:
        i = int(np.argmax(labels))
        raise SciPruneError(
            f"{where}: label {high} at index {i} is out of range; expected classes 0 to {n_classes - 1} ({n_classes} classes)"
        )
    return labels.astype(np.int64)


# ---------------------------------------------------------------------------- IDX
def _find_idx(directory: Path, prefix: str, kind: str, dims: int) -> Path:
    names = [f"{prefix}-{kind}-idx{dims}-ubyte", f"{prefix}-{kind}.idx{dims}-ubyte"]
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if os.path.lexists(candidate):
                return regular_file(candidate, "an IDX file")
    raise DataFormatError(
        f"{directory}: no file '{names[0]}' or '{names[0]}.gz'; expected the standard MNIST / "
        "Fashion-MNIST IDX file names"
    )


def load_mnist_idx(directory: str | Path, *, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST from a directory of IDX files.

    Args:
        directory: holds ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
            ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``.
        split: ``"train"`` or ``"test"`` (the t10k files).

    Returns:
        images uint8 (N, 28, 28) and labels int64 (N,).
    """
    if split not in _MNIST_PREFIX:
        raise SciPruneError(f"split must be 'train' or 'test', got {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise DataFormatError(f"{directory}: no such directory")
    prefix = _MNIST_PREFIX[split]
    img_path = _find_idx(directory, prefix, "images", 3)
    lab_path = _find_idx(directory, prefix, "labels", 1)
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(f"{img_path}: images are {images.dtype} {images.shape}; expected uint8 (N, H, W)")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataFormatError(
            f"{lab_path}: labels have shape {labels.shape}; expected ({len(images)},) to match {img_path.name}"
        )
    return images, _as_data_error(check_labels, labels, str(lab_path))


def _as_data_error(check, values, where: str, *args):
    """``check(values, where, *args)`` with its SciPruneError raised as a DataFormatError (a file's fault)."""
    try:
        return check(values, where, *args)
    except DataFormatError:
        raise
    except SciPruneError as err:
        raise DataFormatError(str(err)) from None


# ---------------------------------------------------------------------------- HDF5
def write_classification_h5(
    path: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    **attrs: Any,
) -> Path:
    """Write images and labels atomically (the file is built in memory, checked against the free
    space, written to a temp file and moved into place with ``os.replace``; no temp file is left
    on any error).

    Args:
        images: (N, H, W) uint8 or float. labels: (N,) integer.
        test_images, test_labels: optional held-out set; when given the split layout
            (``train/...``, ``test/...``) is written, otherwise the flat one.
        attrs: root attributes (str, numbers).
    """
    path = prepare_output(path, what="output file")
    if (test_images is None) != (test_labels is None):
        raise SciPruneError("test_images and test_labels must be given together")
    sets = {"": (images, labels)} if test_images is None else {"train/": (images, labels), "test/": (test_images, test_labels)}
    for prefix, (im, lab) in sets.items():
        _check_pair(np.asarray(im), np.asarray(lab), f"{path}: {prefix or ''}")
    write_atomic(path, _h5_bytes(sets, attrs))
    return path


def _h5_bytes(sets: dict[str, tuple[np.ndarray, np.ndarray]], attrs: dict[str, Any]) -> bytes:
    """The HDF5 file of ``sets`` as bytes, built in memory (no disk write can fail inside HDF5)."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        for prefix, (im, lab) in sets.items():
            h5.create_dataset(f"{prefix}images", data=np.asarray(im), compression="gzip", compression_opts=4)
            h5.create_dataset(f"{prefix}labels", data=np.asarray(lab).astype(np.int64))
        for k, v in attrs.items():
            h5.attrs[k] = v
    return buffer.getvalue()


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3 or images.dtype.kind not in "fiu" or images.size == 0:
        raise SciPruneError(f"{where}images is {images.dtype} {images.shape}; expected real numbers of shape (N, H, W), N >= 1")
    check_labels(labels, f"{where}labels")
    if len(labels) != len(images):
        raise SciPruneError(f"{where}labels has {len(labels)} entries; expected {len(images)} to match images")


def classification_h5_splits(h5: h5py.File) -> list[str] | None:
    """``[""]`` for the flat layout, ``["train", "test"?]`` for the split one, None otherwise.

    Only link names are looked at, and groups are reached through :func:`~sciprune.data._files.node`
    (so an external link is refused, never followed).
    """
    if "images" in h5 and "labels" in h5:
        return [""]
    if "train" in h5 and isinstance(node(h5, "train"), h5py.Group) and "images" in h5["train"]:
        has_test = "test" in h5 and isinstance(node(h5, "test"), h5py.Group) and "images" in h5["test"]
        return ["train"] + (["test"] if has_test else [])
    return None


def read_classification_h5(path: str | Path, *, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (images (N, H, W), labels int64 (N,)) from either HDF5 layout.

    Args:
        split: None reads the flat datasets, or ``train`` of the split layout; ``"train"`` or
            ``"test"`` picks a group of the split layout.
    """
    with open_h5(path, "a classification HDF5 file") as h5:
        path = Path(path)
        prefix = _prefix(h5, path, split)
        im_ds = dataset(h5, f"{prefix}images", ndim=3, expected="real numbers of shape (N, H, W)")
        lab_ds = dataset(h5, f"{prefix}labels", kinds="iu", ndim=1, expected="integer labels of shape (N,)")
        if lab_ds.shape[0] != im_ds.shape[0]:
            raise DataFormatError(
                f"{path}: key '{prefix}labels' has {lab_ds.shape[0]} entries; expected {im_ds.shape[0]} to match '{prefix}images'"
            )
        images, labels = read(im_ds), read(lab_ds)
        n_classes = _n_classes(h5_attrs(h5), path)
    labels = _as_data_error(check_labels, labels, f"{path}: key '{prefix}labels'", n_classes)
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise DataFormatError(f"{path}: key '{prefix}images' contains NaN/inf values")
    return images, labels


def _prefix(h5: h5py.File, path: Path, split: str | None) -> str:
    splits = classification_h5_splits(h5)
    if splits is None:
        raise DataFormatError(f"{path}: found keys {sorted(h5.keys())[:8]}; {_LAYOUT}")
    if splits == [""]:
        if split not in (None, "train"):
            raise DataFormatError(f"{path}: has no group '{split}'; it holds one flat set 'images'/'labels'")
        return ""
    split = split or "train"
    if split not in splits:
        raise DataFormatError(f"{path}: has no group '{split}'; found {splits}")
    return f"{split}/"


def _n_classes(attrs: dict[str, Any], path: Path | str) -> int | None:
    """The ``n_classes`` attribute if recorded (a positive integer), else None."""
    if "n_classes" not in attrs:
        return None
    value = attrs["n_classes"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 1:
        raise DataFormatError(f"{path}: attribute 'n_classes' = {value!r}; expected a positive integer (the number of classes)")
    return int(value)


def convert_idx_to_h5(directory: str | Path, out_path: str | Path) -> Path:
    """Convert an MNIST/Fashion-MNIST IDX directory to one HDF5 file in the split layout.

    Writes groups ``train`` and ``test`` (each ``images`` uint8 (N, 28, 28), ``labels`` int64)
    with root attributes ``source`` (the directory name), ``pixel_max`` = 255 and ``n_classes``
    (one more than the largest training label; every test label must be below it). The output
    path is checked (:func:`~sciprune.outputs.prepare_output`) before anything is read.
    """
    out_path = prepare_output(out_path, what="OUT")
    tr_im, tr_lab = load_mnist_idx(directory, split="train")
    te_im, te_lab = load_mnist_idx(directory, split="test")
    n_classes = int(tr_lab.max()) + 1
    _as_data_error(check_labels, te_lab, f"{directory}: test labels (t10k-labels)", n_classes)
    return write_classification_h5(
        out_path, tr_im, tr_lab, test_images=te_im, test_labels=te_lab,
        source=Path(directory).resolve().name, format="idx", pixel_max=255, n_classes=n_classes,
    )


# ---------------------------------------------------------------------------- digits, any source
def load_digits_default() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: images float64 (1797, 8, 8) in [0, 16], labels int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.asarray(d.images, dtype=np.float64), np.asarray(d.target, dtype=np.int64)


def _positive(value: Any, what: str) -> float:
    """``value`` as a positive finite float, else a SciPruneError naming ``what``."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if not ok or not math.isfinite(float(value)) or float(value) <= 0:
        raise SciPruneError(
            f"{what} = {value!r}; expected a positive finite number (the value of a white pixel, e.g. 255 or 1)"
        )
    return float(value)


def load_classification(
    source: str | Path | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
    """Load a classification data set by name or path.

    Args:
        source: None or ``"digits"`` (scikit-learn's bundled 8x8 digits, offline); a directory
            of MNIST/Fashion-MNIST IDX files (test files optional); a ``.h5``/``.hdf5`` file in
            the flat or split layout.

    Returns:
        (images, labels, test_images or None, test_labels or None, provenance dict).
    """
    if source is None or str(source) == "digits":
        images, labels = load_digits_default()
        prov = {"dataset": "digits", "source": "sklearn.datasets.load_digits", "pixel_max": 16.0, "n_classes": 10}
        return images, labels, None, None, prov
    path = Path(source)
    if path.is_dir():
        images, labels = load_mnist_idx(path, split="train")
        has_test = any(os.path.lexists(path / f"t10k-images{sep}idx3-ubyte{gz}") for sep in "-." for gz in ("", ".gz"))
        test = load_mnist_idx(path, split="test") if has_test else (None, None)
        return images, labels, *test, {"dataset": "idx", "source": str(path), "pixel_max": 255.0}
    if not os.path.lexists(path):
        raise DataFormatError(f"{path}: no such file or directory")
    if path.suffix.lower() in (".h5", ".hdf5") or _is_hdf5(path):
        return _load_h5(path)
    raise DataFormatError(
        f"{path}: unknown classification source; expected 'digits', a directory of MNIST IDX files "
        "or a .h5/.hdf5 file"
    )


def _is_hdf5(path: Path) -> bool:
    regular_file(path, "a classification data file (HDF5) or a directory of IDX files")
    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _load_h5(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None, dict]:
    """A classification HDF5 file: train set, test set if any, and its attributes as provenance."""
    images, labels = read_classification_h5(path)
    with open_h5(path, "a classification HDF5 file") as h5:
        has_test = "test" in (classification_h5_splits(h5) or [])
        attrs = h5_attrs(h5)
    prov = {k: v for k, v in attrs.items() if isinstance(v, (str, int, float)) or k in ("pixel_max", "n_classes")}
    prov.update({"dataset": "hdf5", "source": str(path)})
    if "pixel_max" in prov:
        _positive(prov["pixel_max"], f"{path}: attribute 'pixel_max'")
    if has_test:
        return (images, labels, *read_classification_h5(path, split="test"), prov)
    return images, labels, None, None, prov
