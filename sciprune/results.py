"""Self-describing results: xarray Datasets written atomically as NetCDF4/HDF5 (h5netcdf).

Every file is written beside its destination under a temporary name ``.<name>.<random>.tmp`` (plus an
optional suffix such as ``.png``), flushed to disk and renamed onto the destination; on any error,
including one raised while flushing, closing or renaming, the temporary file is removed and the
destination is left as it was. NetCDF files are encoded in memory first and written with plain file
I/O: HDF5 that fails to close a file on a full disk leaves objects that crash the interpreter at exit.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import xarray as xr

__all__ = ["write_dataset", "read_dataset", "atomic_path", "write_bytes_atomic", "file_sha256", "versions",
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


def file_sha256(path: str | Path, *, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every file system syncs folders
    finally:
        os.close(fd)


def _named(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` (the destination, not the temporary file) so the CLI line says where."""
    if err.errno is None:
        return err
    return type(err)(err.errno, err.strerror or str(err), str(path))


class atomic_path:
    """Context manager giving a temporary path beside ``path``; renamed onto ``path`` on success.

    ``suffix`` is appended to the temporary name (``.png`` lets a writer infer the format). Any error,
    in the body or while syncing and renaming, removes the temporary file and leaves ``path`` as it
    was. The result gets the permissions of a newly created file (``0666 & ~umask``).
    """

    def __init__(self, path: str | Path, *, suffix: str = "") -> None:
        self.path = Path(path)
        self.suffix = suffix

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp" + self.suffix, dir=self.path.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.tmp.unlink(missing_ok=True)
            return
        try:
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.chmod(self.tmp, 0o666 & ~_umask())
            os.replace(self.tmp, self.path)
        except BaseException as err:
            self.tmp.unlink(missing_ok=True)
            if isinstance(err, OSError):
                raise _named(err, self.path) from None
            raise
        _fsync_dir(self.path.parent)


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename); no temporary file is left
    on any error (a full disk raises :class:`OSError` naming ``path``)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
        except OSError as err:
            raise _named(err, path) from None
    return path


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
