"""Self-describing results: xarray Datasets written atomically as NetCDF4/HDF5 (h5netcdf).

Every file is written with :class:`sciprune.outputs.atomic_path` (re-exported here): beside its
destination under a temporary name ``.<name>.<random>.tmp``, flushed and renamed. NetCDF files are encoded in memory first and written with plain file
I/O: HDF5 that fails to close a file on a full disk leaves objects that crash the interpreter at exit.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import xarray as xr

from .outputs import atomic_path, write_bytes_atomic

__all__ = ["write_dataset", "read_dataset", "atomic_path", "write_bytes_atomic", "versions",
           "TEMP_GLOBS"]

#: Names of temporary files :class:`atomic_path` makes (and a study lock's holder may clean).
TEMP_GLOBS = (".*.tmp", ".*.tmp.*")


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


def write_dataset(ds: xr.Dataset, path: str | Path) -> Path:
    """Write ``ds`` to ``path`` (NetCDF4 via h5netcdf) atomically. Dict/list attrs are stored as JSON."""
    ds = ds.copy()
    ds.attrs = {k: (json.dumps(v) if isinstance(v, (dict, list, tuple, bool)) or v is None else v) for k, v in ds.attrs.items()}
    buf = io.BytesIO()  # encoded in memory: no HDF5 file handle can fail to close on a full disk
    with _no_distributed_lock():
        ds.to_netcdf(buf, engine="h5netcdf")
    return write_bytes_atomic(path, buf.getbuffer())


def _no_distributed_lock():
    """While a Dask client is the default scheduler, xarray guards writes with a cluster-wide lock named
    by the target, which fails for an in-memory buffer; the data here are NumPy arrays, so the
    synchronous scheduler (and a local lock) is the right one."""
    try:
        import dask
    except ImportError:
        return contextlib.nullcontext()
    return dask.config.set(scheduler="synchronous")


def read_dataset(path: str | Path) -> xr.Dataset:
    """Read a results file fully into memory (the file is closed afterwards)."""
    # phony_dims: name the dimensions of a plain HDF5 file (not written by us) instead of warning; such
    # a file is then refused by the caller's layout checks.
    with xr.open_dataset(path, engine="h5netcdf", phony_dims="sort") as ds:
        return ds.load()
