"""Image-classification tasks: pixel scaling and a seeded train / validation / test split.

:func:`classification_task` turns images and labels (from any source of
:mod:`sciprune.data.classification_sources`: MNIST / Fashion-MNIST IDX files, the HDF5 layout,
sklearn digits) into a :class:`~sciprune.data.TaskData`. Every public name of the sources module is
re-exported here, so ``from sciprune.data.classification import load_classification`` works as before.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import SciPruneError
from ..scaling import Scaling
from ._types import TaskData
from .classification_sources import (
    _as_data_error,
    _n_classes,
    _positive,
    check_labels,
    classification_h5_splits,
    convert_idx_to_h5,
    load_classification,
    load_digits_default,
    load_mnist_idx,
    read_classification_h5,
    read_idx,
    write_classification_h5,
    write_idx,
)
from .coords import split_counts

__all__ = [
    "read_idx", "write_idx", "load_mnist_idx", "write_classification_h5", "read_classification_h5",
    "convert_idx_to_h5", "load_digits_default", "classification_task", "load_classification", "check_labels",
]
# Also importable from here, as before the split: classification_h5_splits, and the private
# _as_data_error and _n_classes that sciprune.data.info uses.


def _pixel_max(images: np.ndarray, explicit: float | None, provenance: dict) -> tuple[float, str]:
    if explicit is not None:
        return _positive(explicit, "pixel_max"), "given"
    if "pixel_max" in provenance:
        where = f"{provenance['source']}: attribute 'pixel_max'" if "source" in provenance else "provenance 'pixel_max'"
        return _positive(provenance["pixel_max"], where), "recorded with the data"
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
    where = str(provenance.get("source", "classification data"))
    images, labels = np.asarray(images), np.asarray(labels)
    if images.ndim < 2 or labels.ndim != 1 or len(images) != len(labels):
        raise SciPruneError(f"{where}: images (N, H, W) and labels (N,) must match, got {images.shape} and {labels.shape}")
    _check_images(images, where)
    n_classes = _n_classes(provenance, where)
    labels = check_labels(labels, f"{where}: labels", n_classes)
    if (test_images is None) != (test_labels is None):
        raise SciPruneError("test_images and test_labels must be given together")
    if test_images is not None:
        test_images = np.asarray(test_images)
        _check_images(test_images, where, "test images")
    for name, f in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= float(f) < 1.0:
            raise SciPruneError(f"{name} must be in [0, 1), got {f}")
    scale, rule = _pixel_max(images, pixel_max, provenance)
    stated = rule in ("given", "recorded with the data")  # a stated pixel_max bounds the data
    for what, im in (("images", images), ("test images", test_images)):
        top = float(np.max(im)) if stated and im is not None and im.size else 0.0
        if top > scale:
            raise SciPruneError(
                f"{where}: {what} hold values up to {top:g}, above pixel_max = {scale:g} ({rule}); "
                "give the value of a white pixel as pixel_max"
            )
    n = len(images)
    n_test, n_val = split_counts(n, None if test_images is not None else test_fraction, val_fraction, "images")
    n_classes = n_classes or int(labels.max()) + 1
    rng = np.random.default_rng(int(seed))
    perm = rng.permutation(n)
    idx = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
    flat = images.reshape(n, -1).astype(np.float64) / scale
    X = {k: flat[v] for k, v in idx.items()}
    Y = {k: labels[v] for k, v in idx.items()}
    if test_images is not None:
        ti, tl = np.asarray(test_images), np.asarray(test_labels)
        if ti.shape[1:] != images.shape[1:] or tl.ndim != 1 or len(ti) != len(tl) or len(ti) == 0:
            raise SciPruneError(
                f"{where}: test_images {ti.shape} and test_labels {tl.shape} must match images {images.shape[1:]} "
                "per item and hold at least one item"
            )
        X["test"] = ti.reshape(len(ti), -1).astype(np.float64) / scale
        Y["test"] = check_labels(tl, f"{where}: test labels", n_classes)
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


def _check_images(images: np.ndarray, where: str, what: str = "images") -> None:
    """Real (not complex, string or boolean), finite pixel values."""
    if images.dtype.kind not in "fiu":
        raise SciPruneError(f"{where}: {what} have dtype {images.dtype}; expected real pixel values (integer or float)")
    if images.dtype.kind == "f" and not np.all(np.isfinite(images)):
        raise SciPruneError(f"{where}: {what} contain NaN/inf values")
