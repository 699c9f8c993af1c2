"""Human-readable summaries of data files, for ``sciprune data info FILE``.

The file is checked and opened exactly as the readers of ``train`` and ``run`` do
(:mod:`sciprune.data._files`), so whatever they refuse, ``data info`` refuses with the same one
line, and whatever ``data info`` describes, they can read.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import DataFormatError
from ._files import attrs as h5_attrs
from ._files import dataset, open_h5, read, regular_file
from ._idx import GZIP_MAGIC, looks_like_idx, read_idx
from .classification import _as_data_error, _n_classes, check_labels, classification_h5_splits
from .pdebench import open_pdebench

__all__ = ["describe_file"]

_WHAT = "a data file (PDEBench HDF5, classification HDF5 or IDX)"


def describe_file(path: str | Path) -> str:
    """Describe a PDEBench HDF5 file (either layout), a classification HDF5 file or an IDX file.

    Reads only metadata, the labels of a classification file and, for PDEBench files, the
    first sample (whose values and coordinates are checked as ``train`` checks them).

    Raises:
        DataFormatError: missing or special file, or a format none of the above, or a file of
            one of these formats that the readers would refuse.
    """
    path = regular_file(path, _WHAT)
    with open(path, "rb") as fh:
        head = fh.read(8)
    try:
        is_hdf5 = bool(h5py.is_hdf5(path))
    except OSError:
        is_hdf5 = False
    if is_hdf5:
        with open_h5(path, _WHAT) as h5:
            splits = classification_h5_splits(h5)
            if splits is not None:
                return _describe_classification(path, h5, splits)
        return _describe_pdebench(path)
    if looks_like_idx(head):
        return _describe_idx(path, gzipped=head[:2] == GZIP_MAGIC)
    raise DataFormatError(
        f"{path}: unknown format (first bytes {head[:4].hex(' ') or 'empty'}); expected a PDEBench HDF5 "
        "file, a classification HDF5 file ('images'/'labels') or an IDX file"
    )


def _describe_pdebench(path: Path) -> str:
    with open_pdebench(path) as f:
        info = f.info()
        first = f.sample(0)
    layout = {"groups": "per-sample groups", "tensor": "single tensor"}[info["layout"]]
    lines = [str(path), f"  format: PDEBench HDF5, {layout} layout", f"  samples: {info['n_samples']}"]
    if info["layout"] == "groups":
        lines[-1] += f" (groups '{info['keys'][0]}' ... '{info['keys'][1]}')"
    lines.append(f"  sample dims: {dict(first.sizes)} ({first.dtype})")
    for name in first.coords:
        c = np.asarray(first[name].values)
        if c.dtype.kind in "fiu" and c.size:
            lines.append(f"  {name}: {c.size} points in [{c.min():.6g}, {c.max():.6g}]")
        else:
            lines.append(f"  {name}: {list(c.tolist())}")
    lines.append("  datasets:")
    for key, shape in info["shapes"].items():
        lines.append(f"    {key}: {tuple(shape)} {info['dtypes'][key]}")
    if info["attrs"]:
        lines.append("  attributes:")
        for key, value in info["attrs"].items():
            lines.append(f"    {key}: {_short(value)}")
    return "\n".join(lines)


def _describe_classification(path: Path, h5: h5py.File, splits: list[str]) -> str:
    attrs = h5_attrs(h5)
    n_classes = _n_classes(attrs, path)
    lines = [str(path), "  format: classification HDF5, " + ("flat layout" if splits == [""] else "train/test layout")]
    for split in splits:
        prefix = f"{split}/" if split else ""
        images = dataset(h5, f"{prefix}images", ndim=3, expected="real numbers of shape (N, H, W)")
        labels_ds = dataset(h5, f"{prefix}labels", kinds="iu", ndim=1, expected="integer labels of shape (N,)")
        if labels_ds.shape[0] != images.shape[0]:
            raise DataFormatError(
                f"{path}: key '{prefix}labels' has {labels_ds.shape[0]} entries; expected {images.shape[0]} "
                f"to match '{prefix}images'"
            )
        labels = _as_data_error(check_labels, read(labels_ds), f"{path}: key '{prefix}labels'", n_classes)
        lines.append(
            f"  {prefix}images: {images.shape} {images.dtype}; {prefix}labels: {labels_ds.shape} "
            f"{labels_ds.dtype}, {len(np.unique(labels))} classes"
        )
    for key, value in attrs.items():
        lines.append(f"  {key}: {_short(value)}")
    return "\n".join(lines)


def _describe_idx(path: Path, *, gzipped: bool) -> str:
    data = read_idx(path)
    gz = ", gzipped" if gzipped else ""
    lines = [str(path), f"  format: IDX{gz}", f"  shape: {data.shape} {data.dtype}"]
    if data.size:
        lines.append(f"  values in [{data.min()}, {data.max()}]")
    return "\n".join(lines)


def _short(value: object) -> str:
    text = " ".join(str(value).split())
    return f"{text[:100]}{'...' if len(text) > 100 else ''}"
