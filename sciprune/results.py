"""Self-describing results: xarray Datasets written atomically as NetCDF4/HDF5 (h5netcdf)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import xarray as xr

__all__ = ["write_dataset", "read_dataset", "atomic_path", "file_sha256", "versions"]


def versions() -> dict:
    """Versions of the packages a result depends on."""
    import h5py
    import numpy
    import scipy
    import torch

    from . import __version__

    return {
        "sciprune": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
        "scipy": scipy.__version__, "h5py": h5py.__version__, "xarray": xr.__version__,
    }


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class atomic_path:
    """Context manager giving a temporary path beside ``path``; renamed onto ``path`` on success.

    A crash or exception leaves ``path`` as it was and removes the temporary file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_dataset(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to ``path`` (NetCDF4 via h5netcdf) atomically. Dict/list attrs are stored as JSON."""
    ds = ds.copy()
    ds.attrs = {k: (json.dumps(v) if isinstance(v, (dict, list, tuple, bool)) or v is None else v) for k, v in ds.attrs.items()}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="h5netcdf")
    return Path(path)


def read_dataset(path: str | Path) -> xr.Dataset:
    """Read a results file fully into memory (the file is closed afterwards)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        return ds.load()
