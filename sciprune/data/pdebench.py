"""Lazy readers for PDEBench HDF5 files of both published layouts.

Two layouts exist among the published PDEBench files:

* **groups** (``1D_diff-sorp_NA_NA.h5``, 2D diff-react, shallow water): one top-level group per
  sample, named by a zero-padded integer (``"0000"`` ...). Each holds ``data`` with axes
  (t, x[, y], channel) and ``grid/x`` [``grid/y``] ``grid/t``.
* **tensor** (Advection, Burgers, reaction-diffusion): one dataset ``tensor`` with axes
  (sample, t, x[, y]) and coordinates ``x-coordinate`` [``y-coordinate``] ``t-coordinate``. The
  t-coordinate may be one entry longer than the time axis (PDEBench's generators save
  ``arange(nt + 1) * dt``); it is trimmed to the time axis, as PDEBench's own loaders do.
  Compressible-flow files (``density``, ``pressure``, ``Vx`` ...) read the same way with one
  variable per dataset, stacked along a ``var`` dimension.

Only one sample is read from disk per :meth:`PDEBenchFile.sample` call; the 4 GB diff-sorp
file is never loaded whole. Files are opened through :mod:`sciprune.data._files` (regular files
only, truncated files and external links refused); values must be real numbers (complex, string,
compound and boolean data are refused) and coordinates 1-D, finite and strictly monotonic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np
import xarray as xr

from ..errors import DataFormatError, SciPruneError
from ._files import attrs as _attrs
from ._files import dataset, node, open_h5, read, subgroups
from .coords import check_axis

__all__ = ["open_pdebench", "PDEBenchFile"]

_SPACE_AXES = ("x", "y", "z")
_CFD_VARS = ("density", "pressure", "Vx", "Vy", "Vz")
_EXPECTED = (
    "expected either a single-tensor PDEBench file (dataset 'tensor' of shape (N, Nt, Nx) with "
    "'x-coordinate' and 't-coordinate') or a per-sample group file (groups '0000', '0001', ... "
    "each holding 'data' of shape (Nt, Nx, 1) and 'grid/x', 'grid/t')"
)


def open_pdebench(path: str | Path) -> "PDEBenchFile":
    """Open a PDEBench HDF5 file read-only and detect its layout.

    Use as a context manager (``with open_pdebench(p) as f: u = f.sample(0)``) or call
    :meth:`PDEBenchFile.close` when done.

    Raises:
        DataFormatError: the file is missing, not HDF5, or in neither PDEBench layout.
    """
    return PDEBenchFile(path)


class PDEBenchFile:
    """A PDEBench HDF5 file opened lazily; see the module docstring for the layouts.

    Attributes:
        path: the file path.
        layout: ``"groups"`` or ``"tensor"``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._h5: h5py.File | None = open_h5(self.path, "a PDEBench HDF5 file")
        try:
            self._detect()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ layout detection
    def _detect(self) -> None:
        h5 = self._file
        keys = list(h5.keys())
        if "tensor" in h5 or any(v in h5 for v in _CFD_VARS):
            self._detect_tensor(h5, keys)
            return
        groups = subgroups(h5, [k for k in keys if k.isdigit()])
        if not groups:
            raise DataFormatError(f"{self.path}: found keys {_short(keys)}; {_EXPECTED}")
        self.layout = "groups"
        self._keys = sorted(groups, key=int)
        self._n = len(self._keys)
        first = self._keys[0]
        if node(h5, f"{first}/data") is None:
            raise DataFormatError(
                f"{self.path}: group '{first}' has keys {_short(list(h5[first].keys()))}; "
                "expected 'data' and 'grid' (with 'grid/x', 'grid/t')"
            )
        dataset(h5, f"{first}/data", expected="real values of shape (Nt, Nx, 1)")

    def _detect_tensor(self, h5: h5py.File, keys: list[str]) -> None:
        self.layout = "tensor"
        self._variables = ["tensor"] if "tensor" in h5 else [v for v in _CFD_VARS if v in h5]
        self._space = [a for a in _SPACE_AXES if f"{a}-coordinate" in h5]
        for key in ("x-coordinate", "t-coordinate"):
            if key not in h5:
                raise DataFormatError(f"{self.path}: key '{key}' is missing; found keys {_short(keys)}; {_EXPECTED}")
        axes = ", ".join(["N", "Nt", *(f"N{a}" for a in self._space)])
        want = 2 + len(self._space)
        first = dataset(h5, self._variables[0], expected=f"real values of shape ({axes})")
        for var in self._variables:
            shape = dataset(h5, var, expected=f"real values of shape ({axes})").shape
            if len(shape) != want or shape != first.shape:
                raise DataFormatError(
                    f"{self.path}: key '{var}' has shape {shape}; expected ({axes})"
                    + (f" like '{self._variables[0]}' {first.shape}" if var != self._variables[0] else "")
                )
        self._n = int(first.shape[0])
        self._keys: list[str] = []

    @property
    def _file(self) -> h5py.File:
        if self._h5 is None:
            raise SciPruneError(f"{self.path}: file is closed; open it again with open_pdebench()")
        return self._h5

    # ------------------------------------------------------------------ public API
    def __len__(self) -> int:
        return self._n

    @property
    def keys(self) -> list[str]:
        """Sample group names (groups layout) or ``[]`` (tensor layout)."""
        return list(self._keys)

    def sample(self, i: int | str) -> xr.DataArray:
        """Read one sample as a DataArray named ``"u"``.

        Args:
            i: sample index in ``[0, len(self))``; for the groups layout also a group name
                such as ``"0003"``.

        Returns:
            DataArray with dims ("t", "x") for one-variable 1D data; ("t", "x", "y") in 2D; a
            trailing "var" dim when there are several channels. Coordinates come from the file
            (float64); attrs ``{file, sample, layout}`` plus ``group`` for the groups layout.

        Raises:
            SciPruneError: index out of range.
            DataFormatError: wrong shapes, missing keys, or NaN/inf values in the sample.
        """
        index = self._index(i)
        if self.layout == "tensor":
            values, coords, dims, where = self._read_tensor(index)
        else:
            values, coords, dims, where = self._read_group(index)
        bad = ~np.isfinite(values)
        if bad.any():
            raise DataFormatError(
                f"{self.path}: sample {index} ({where}) contains {int(bad.sum())} NaN/inf values "
                f"out of {values.size}; the sample cannot be used"
            )
        attrs: dict[str, Any] = {"file": str(self.path), "sample": index, "layout": self.layout}
        if self.layout == "groups":
            attrs["group"] = self._keys[index]
        return xr.DataArray(values, dims=dims, coords=coords, name="u", attrs=attrs)

    def _index(self, i: int | str) -> int:
        if isinstance(i, str) and self.layout == "groups" and i in self._keys:
            return self._keys.index(i)
        if isinstance(i, (bool, np.bool_)) or not isinstance(i, (int, np.integer)):
            raise SciPruneError(
                f"{self.path}: sample must be an integer index"
                + (" or a group name like '0000'" if self.layout == "groups" else "")
                + f", got {i!r}"
            )
        if not 0 <= int(i) < self._n:
            raise SciPruneError(
                f"{self.path}: sample {int(i)} is out of range; the file has {self._n} samples "
                f"(indices 0 to {self._n - 1})"
            )
        return int(i)

    def _read_tensor(self, index: int):
        h5 = self._file
        arrays = [read(dataset(h5, v), index) for v in self._variables]  # (Nt, Nx[, Ny]) each
        nt = arrays[0].shape[0]
        coords: dict[str, np.ndarray] = {"t": self._coordinate("t-coordinate", nt, time=True)}
        for axis, n in zip(self._space, arrays[0].shape[1:]):
            coords[axis] = self._coordinate(f"{axis}-coordinate", n)
        dims = ["t", *self._space]
        if len(arrays) == 1:
            values = arrays[0]
        else:
            values = np.stack(arrays, axis=-1)
            dims.append("var")
            coords["var"] = np.array(self._variables)
        return values, coords, tuple(dims), f"key '{', '.join(self._variables)}' at index {index}"

    def _coordinate(self, key: str, n: int, *, time: bool = False) -> np.ndarray:
        """Read a 1-D coordinate of a tensor-layout file; trim a t-coordinate one entry too long."""
        hint = f" or {n + 1}" if time else ""
        ds = dataset(self._file, key, ndim=1, expected=f"a 1-D coordinate array of length {n}{hint}")
        c = check_axis(read(ds), f"{self.path}: key '{key}'")
        if time and len(c) == n + 1:
            c = c[:n]  # PDEBench saves arange(nt + 1) * dt; its loaders use t[:nt]
        if len(c) != n:
            raise DataFormatError(f"{self.path}: key '{key}' has length {len(c)}; expected {n}{hint} to match the data")
        return c

    def _read_group(self, index: int):
        key = self._keys[index]
        h5 = self._file
        for sub in ("data", "grid/t", "grid/x"):
            if node(h5, f"{key}/{sub}") is None:
                raise DataFormatError(
                    f"{self.path}: group '{key}' has no key '{sub}'; expected 'data' and 'grid/x', 'grid/t'"
                )
        space = [a for a in _SPACE_AXES if node(h5, f"{key}/grid/{a}") is not None]
        coords = {a: self._grid(key, a) for a in ["t", *space]}
        data = dataset(h5, f"{key}/data", expected="real values of shape (Nt, Nx, 1)")
        grid_shape = tuple(len(coords[a]) for a in ["t", *space])
        if data.ndim != len(grid_shape) + 1 or tuple(data.shape[:-1]) != grid_shape:
            axes = ", ".join(["Nt", *(f"N{a}" for a in space), "1"])
            raise DataFormatError(
                f"{self.path}: key 'data' in group '{key}' has shape {tuple(data.shape)}; expected "
                f"({axes}) = {(*grid_shape, 1)} from 'grid/t' and 'grid/{'/'.join(space)}'"
            )
        values = read(data)
        dims = ["t", *space]
        if values.shape[-1] == 1:
            values = values[..., 0]
        else:
            dims.append("var")
            coords["var"] = np.arange(values.shape[-1])
        return values, coords, tuple(dims), f"key 'data' in group '{key}'"

    def _grid(self, key: str, axis: str) -> np.ndarray:
        """The coordinate ``grid/<axis>`` of sample group ``key``: 1-D, finite, strictly monotonic."""
        name = f"{key}/grid/{axis}"
        ds = dataset(self._file, name, ndim=1, expected=f"a 1-D coordinate array (N{axis},)")
        return check_axis(read(ds), f"{self.path}: key '{name}'")

    def info(self) -> dict[str, Any]:
        """Summary of the file without reading sample values.

        Returns:
            dict with ``layout``, ``n_samples``, ``shapes`` and ``dtypes`` (per dataset path; for
            the groups layout those of the first group), ``attrs`` (root attributes, and the first
            group's under ``"<group>/..."``), ``keys`` (first and last sample group names).
        """
        h5 = self._file
        shapes: dict[str, list[int]] = {}
        dtypes: dict[str, str] = {}
        attrs = _attrs(h5)

        def visit(name: str, obj) -> None:
            if isinstance(obj, h5py.Dataset):
                shapes[name] = list(obj.shape)
                dtypes[name] = str(obj.dtype)

        if self.layout == "tensor":
            h5.visititems(visit)
        else:
            first = self._keys[0]
            h5[first].visititems(lambda n, o: visit(f"{first}/{n}", o))
            attrs.update({f"{first}/{k}": v for k, v in _attrs(h5[first]).items()})
        out: dict[str, Any] = {
            "file": str(self.path),
            "layout": self.layout,
            "n_samples": self._n,
            "shapes": shapes,
            "dtypes": dtypes,
            "attrs": attrs,
        }
        if self.layout == "groups":
            out["keys"] = [self._keys[0], self._keys[-1]]
        else:
            out["variables"] = list(self._variables)
        return out

    def close(self) -> None:
        """Close the HDF5 handle (idempotent)."""
        if getattr(self, "_h5", None) is not None:
            self._h5.close()
            self._h5 = None

    def __enter__(self) -> "PDEBenchFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._h5 is None else f"{self._n} samples"
        return f"PDEBenchFile({str(self.path)!r}, layout={self.layout!r}, {state})"


def _short(keys: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:n])
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return f"[{shown}{more}]"
