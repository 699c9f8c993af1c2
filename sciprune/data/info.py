"""Human-readable summaries of data files, for ``sciprune data info FILE``."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ..errors import DataFormatError
from .classification import _GZIP_MAGIC, _IDX_TYPES, classification_h5_splits, read_idx
from .pdebench import open_pdebench

__all__ = ["describe_file"]


def describe_file(path: str | Path) -> str:
    """Describe a PDEBench HDF5 file (either layout), a classification HDF5 file or an IDX file.

    Reads only metadata and, for PDEBench files, the coordinates of the first sample.

    Raises:
        DataFormatError: missing file or a format none of the above.
    """
    path = Path(path)
    if not path.exists():
        raise DataFormatError(f"{path}: no such file")
    if path.is_dir():
        raise DataFormatError(f"{path}: is a directory; expected a data file")
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as h5:
            splits = classification_h5_splits(h5)
            if splits is not None:
                return _describe_classification(path, h5, splits)
        return _describe_pdebench(path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == _GZIP_MAGIC or (len(head) == 4 and head[:2] == b"\0\0" and head[2] in _IDX_TYPES):
        return _describe_idx(path, gzipped=head[:2] == _GZIP_MAGIC)
    raise DataFormatError(
        f"{path}: unknown format (first bytes {head.hex(' ') or 'empty'}); expected a PDEBench HDF5 "
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
            text = str(value).replace("\n", " ")
            lines.append(f"    {key}: {text[:100]}{'...' if len(text) > 100 else ''}")
    return "\n".join(lines)


def _describe_classification(path: Path, h5: h5py.File, splits: list[str]) -> str:
    lines = [str(path), "  format: classification HDF5, " + ("flat layout" if splits == [""] else "train/test layout")]
    for split in splits:
        prefix = f"{split}/" if split else ""
        images, labels = h5[f"{prefix}images"], h5[f"{prefix}labels"]
        n_classes = len(np.unique(labels[...])) if labels.ndim == 1 else "?"
        lines.append(
            f"  {prefix}images: {images.shape} {images.dtype}; {prefix}labels: {labels.shape} "
            f"{labels.dtype}, {n_classes} classes"
        )
    for key, value in h5.attrs.items():
        lines.append(f"  {key}: {value.decode() if isinstance(value, bytes) else value}")
    return "\n".join(lines)


def _describe_idx(path: Path, *, gzipped: bool) -> str:
    data = read_idx(path)
    gz = ", gzipped" if gzipped else ""
    lines = [str(path), f"  format: IDX{gz}", f"  shape: {data.shape} {data.dtype}"]
    if data.size:
        lines.append(f"  values in [{data.min()}, {data.max()}]")
    return "\n".join(lines)
