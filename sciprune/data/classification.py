"""Image-classification data: MNIST / Fashion-MNIST IDX files, an HDF5 layout, sklearn digits.

HDF5 layout written by :func:`write_classification_h5` and read by
:func:`read_classification_h5` (two forms, both accepted):

* flat: datasets ``images`` (N, H, W) uint8 or float and ``labels`` (N,) integer;
* split: groups ``train`` and ``test``, each holding ``images`` and ``labels`` as above
  (what :func:`convert_idx_to_h5` writes).

Root attributes (``source``, ``pixel_max`` ...) are free-form and copied into provenance.

IDX (LeCun's MNIST format): magic ``00 00 TT DD`` with type code TT (0x08 uint8, 0x09 int8,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64) and DD dimensions, then DD big-endian
uint32 sizes, then the big-endian data. Files may be gzipped (detected by the magic ``1f 8b``).
"""

from __future__ import annotations

import gzip
import os
import tempfile
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import DataFormatError, SciPruneError
from ..scaling import Scaling
from ._types import TaskData

__all__ = [
    "read_idx", "write_idx", "load_mnist_idx", "write_classification_h5", "read_classification_h5",
    "convert_idx_to_h5", "load_digits_default", "classification_task", "load_classification",
]

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_IDX_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_TYPES.items()}
_GZIP_MAGIC = b"\x1f\x8b"
_MNIST_PREFIX = {"train": "train", "test": "t10k"}


# ---------------------------------------------------------------------------- IDX
def _open_maybe_gzip(path: Path):
    with open(path, "rb") as fh:
        head = fh.read(2)
    return gzip.open(path, "rb") if head == _GZIP_MAGIC else open(path, "rb")


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not) into a native-endian array of the stored shape."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    try:
        with _open_maybe_gzip(path) as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise DataFormatError(f"{path}: cannot read gzip data ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise DataFormatError(
            f"{path}: not an IDX file: magic is {raw[:4].hex(' ') or 'empty'}; expected 00 00 TT DD with "
            "type code TT in 08/09/0b/0c/0d/0e and DD >= 1 dimensions (or a gzip header 1f 8b)"
        )
    ndim = raw[3]
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataFormatError(f"{path}: IDX header truncated; expected {ndim} dimension sizes")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataFormatError(
            f"{path}: IDX payload has {len(raw) - header} bytes; expected {expected} for shape {shape} of {dtype.name}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``compress``); returns the path."""
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0 or array.ndim > 255:
        raise SciPruneError(f"IDX can hold uint8/int8/int16/int32/float32/float64 arrays of 1 to 255 dims, got {array.dtype} {array.shape}")
    payload = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload += array.astype(_IDX_TYPES[code]).tobytes()
    path = Path(path)
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as fh:
        fh.write(payload)
    return path


def _find_idx(directory: Path, prefix: str, kind: str, dims: int) -> Path:
    names = [f"{prefix}-{kind}-idx{dims}-ubyte", f"{prefix}-{kind}.idx{dims}-ubyte"]
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
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
    return images, labels.astype(np.int64)


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
    """Write images and labels atomically (temp file, then ``os.replace``).

    Args:
        images: (N, H, W) uint8 or float. labels: (N,) integer.
        test_images, test_labels: optional held-out set; when given the split layout
            (``train/...``, ``test/...``) is written, otherwise the flat one.
        attrs: root attributes (str, numbers).
    """
    path = Path(path)
    sets = {"": (images, labels)} if test_images is None else {"train/": (images, labels), "test/": (test_images, test_labels)}
    if (test_images is None) != (test_labels is None):
        raise SciPruneError("test_images and test_labels must be given together")
    for prefix, (im, lab) in sets.items():
        _check_pair(np.asarray(im), np.asarray(lab), f"{path}: {prefix or ''}")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as h5:
            for prefix, (im, lab) in sets.items():
                h5.create_dataset(f"{prefix}images", data=np.asarray(im), compression="gzip", compression_opts=4)
                h5.create_dataset(f"{prefix}labels", data=np.asarray(lab).astype(np.int64))
            for k, v in attrs.items():
                h5.attrs[k] = v
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def _check_pair(images: np.ndarray, labels: np.ndarray, where: str) -> None:
    if images.ndim != 3:
        raise SciPruneError(f"{where}images has shape {images.shape}; expected (N, H, W)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise SciPruneError(f"{where}labels is {labels.dtype} {labels.shape}; expected integer (N,)")
    if len(labels) != len(images):
        raise SciPruneError(f"{where}labels has {len(labels)} entries; expected {len(images)} to match images")


def classification_h5_splits(h5: h5py.File) -> list[str] | None:
    """``[""]`` for the flat layout, ``["train", "test"?]`` for the split one, None otherwise."""
    if "images" in h5 and "labels" in h5:
        return [""]
    if "train" in h5 and isinstance(h5["train"], h5py.Group) and "images" in h5["train"]:
        return ["train"] + (["test"] if "test" in h5 and "images" in h5["test"] else [])
    return None


def read_classification_h5(path: str | Path, *, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read (images (N, H, W), labels int64 (N,)) from either HDF5 layout.

    Args:
        split: None reads the flat datasets, or ``train`` of the split layout; ``"train"`` or
            ``"test"`` picks a group of the split layout.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise DataFormatError(f"{path}: not an HDF5 file")
    with h5py.File(path, "r") as h5:
        splits = classification_h5_splits(h5)
        if splits is None:
            raise DataFormatError(
                f"{path}: found keys {sorted(h5.keys())[:8]}; expected datasets 'images' (N, H, W) and "
                "'labels' (N,), or groups 'train'/'test' holding them"
            )
        if splits == [""]:
            if split not in (None, "train"):
                raise DataFormatError(f"{path}: has no group '{split}'; it holds one flat set 'images'/'labels'")
            prefix = ""
        else:
            split = split or "train"
            if split not in splits:
                raise DataFormatError(f"{path}: has no group '{split}'; found {splits}")
            prefix = f"{split}/"
        for key in ("images", "labels"):
            if f"{prefix}{key}" not in h5:
                raise DataFormatError(f"{path}: key '{prefix}{key}' is missing")
        images, labels = h5[f"{prefix}images"][...], h5[f"{prefix}labels"][...]
    if images.ndim != 3:
        raise DataFormatError(f"{path}: key '{prefix}images' has shape {images.shape}; expected (N, H, W)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataFormatError(f"{path}: key '{prefix}labels' is {labels.dtype} {labels.shape}; expected integer (N,)")
    if len(labels) != len(images):
        raise DataFormatError(
            f"{path}: key '{prefix}labels' has {len(labels)} entries; expected {len(images)} to match '{prefix}images'"
        )
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise DataFormatError(f"{path}: key '{prefix}images' contains NaN/inf values")
    return images, labels.astype(np.int64)


def convert_idx_to_h5(directory: str | Path, out_path: str | Path) -> Path:
    """Convert an MNIST/Fashion-MNIST IDX directory to one HDF5 file in the split layout.

    Writes groups ``train`` and ``test`` (each ``images`` uint8 (N, 28, 28), ``labels`` int64)
    with root attributes ``source`` (the directory name) and ``pixel_max`` = 255.
    """
    tr_im, tr_lab = load_mnist_idx(directory, split="train")
    te_im, te_lab = load_mnist_idx(directory, split="test")
    return write_classification_h5(
        out_path, tr_im, tr_lab, test_images=te_im, test_labels=te_lab,
        source=Path(directory).resolve().name, format="idx", pixel_max=255,
    )


# ---------------------------------------------------------------------------- tasks
def load_digits_default() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 digits: images float64 (1797, 8, 8) in [0, 16], labels int64."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return np.asarray(d.images, dtype=np.float64), np.asarray(d.target, dtype=np.int64)


def _pixel_max(images: np.ndarray, explicit: float | None, provenance: dict) -> tuple[float, str]:
    if explicit is not None:
        return float(explicit), "given"
    if "pixel_max" in provenance:
        return float(provenance["pixel_max"]), "recorded with the data"
    if images.dtype == np.uint8:
        return 255.0, "uint8 range"
    top = float(images.max()) if images.size else 1.0
    return (1.0, "float data already in [0, 1]") if top <= 1.0 else (top, "data maximum")


def classification_task(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    test_images: np.ndarray | None = None,
    test_labels: np.ndarray | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    provenance: dict | None = None,
    pixel_max: float | None = None,
) -> TaskData:
    """Flattened, [0, 1]-scaled classification task with a seeded split.

    Pixels are divided by ``pixel_max``: the given value, else ``provenance["pixel_max"]``,
    else 255 for uint8, else the data maximum (1 if already <= 1); it is recorded in provenance
    and as ``input_scaling`` (shift 0, scale pixel_max). Without a test set, ``test_fraction``
    and ``val_fraction`` of ``images`` are held out; with one, only ``val_fraction`` is.

    Args:
        images: (N, H, W) or (N, F). labels: (N,) integers in [0, n_classes).
        test_images, test_labels: optional separate test set, same layout.

    Returns:
        TaskData with X_* (n, H*W) float and Y_* (n,) int64.
    """
    provenance = dict(provenance or {})
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
        raise SciPruneError(f"images (N, H, W) and labels (N,) must match, got {images.shape} and {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or (labels.size and labels.min() < 0):
        raise SciPruneError(f"labels must be non-negative integers, got dtype {labels.dtype}")
    if (test_images is None) != (test_labels is None):
        raise SciPruneError("test_images and test_labels must be given together")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise SciPruneError("images contain NaN/inf values")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(f) < 1.0:
            raise SciPruneError(f"{name} must be in [0, 1), got {f}")
    scale, rule = _pixel_max(images, pixel_max, provenance)
    n = len(images)
    rng = np.random.default_rng(int(seed))
    perm = rng.permutation(n)
    n_val = int(np.floor(val_fraction * n + 0.5))
    n_test = 0 if test_images is not None else int(np.floor(test_fraction * n + 0.5))
    if n_val + n_test >= n:
        raise SciPruneError(f"val_fraction and test_fraction leave no training images out of {n}")
    idx = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    flat = images.reshape(n, -1).astype(np.float64) / scale
    X = {k: flat[v] for k, v in idx.items()}
    Y = {k: labels[v].astype(np.int64) for k, v in idx.items()}
    if test_images is not None:
        ti, tl = np.asarray(test_images), np.asarray(test_labels)
        if ti.shape[1:] != images.shape[1:] or tl.ndim != 1 or len(ti) != len(tl):
            raise SciPruneError(
                f"test_images {ti.shape} and test_labels {tl.shape} must match images {images.shape[1:]} per item"
            )
        X["test"] = ti.reshape(len(ti), -1).astype(np.float64) / scale
        Y["test"] = tl.astype(np.int64)
    n_classes = int(max(int(y.max()) for y in Y.values() if y.size) + 1)
    provenance.update({
        "image_shape": list(images.shape[1:]),
        "pixel_max": scale,
        "pixel_max_rule": rule,
        "split_seed": int(seed),
        "fractions": {"val_fraction": float(val_fraction),
                      "test_fraction": None if test_images is not None else float(test_fraction)},
        "test_set": "separate" if test_images is not None else "held out",
        "n_train": len(Y["train"]), "n_val": len(Y["val"]), "n_test": len(Y["test"]),
        "n_classes": n_classes,
    })
    n_features = flat.shape[1]
    return TaskData(
        task="classification",
        **{f"X_{k}": torch.as_tensor(X[k], dtype=dtype).reshape(-1, n_features) for k in ("train", "val", "test")},
        **{f"Y_{k}": torch.as_tensor(Y[k], dtype=torch.int64) for k in ("train", "val", "test")},
        input_scaling=Scaling(np.zeros(n_features), np.full(n_features, scale)),
        provenance=provenance,
        n_classes=n_classes,
    )


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
        return images, labels, None, None, {"dataset": "digits", "source": "sklearn.datasets.load_digits", "pixel_max": 16.0}
    path = Path(source)
    if path.is_dir():
        images, labels = load_mnist_idx(path, split="train")
        try:
            test = load_mnist_idx(path, split="test")
        except DataFormatError:
            test = (None, None)
        return images, labels, *test, {"dataset": "idx", "source": str(path), "pixel_max": 255.0}
    if path.suffix.lower() in (".h5", ".hdf5"):
        if not path.is_file():
            raise DataFormatError(f"{path}: no such file")
        images, labels = read_classification_h5(path)
        with h5py.File(path, "r") as h5:
            has_test = "test" in (classification_h5_splits(h5) or [])
            attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in h5.attrs.items()}
        prov = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()
                if isinstance(v, (str, bytes, int, float))}
        prov.update({"dataset": "hdf5", "source": str(path)})
        if has_test:
            return (images, labels, *read_classification_h5(path, split="test"), prov)
        return images, labels, None, None, prov
    if not path.exists():
        raise DataFormatError(f"{path}: no such file or directory")
    raise DataFormatError(
        f"{path}: unknown classification source; expected 'digits', a directory of MNIST IDX files "
        "or a .h5/.hdf5 file"
    )
