"""Coordinate-regression tasks (x, t) -> u built from one PDE sample.

Every grid point of one sample is a datum: input ``(x, t)``, target ``u(x, t)``. Points are in
C order of the sample's (t, x) array, so ``values.reshape(Nt, Nx)`` rebuilds a field; this is
the order of :func:`grid_inputs` and of the indices returned by :func:`split_indices`.

Seeds: the noise is drawn with ``np.random.default_rng(noise_seed)`` over all points (so the
realisation does not depend on the split); the split permutation uses
``np.random.default_rng([seed, 1])``, a stream independent of the noise even when the seeds
are equal.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
import xarray as xr

from ..errors import DataFormatError, SciPruneError
from ..scaling import Scaling
from ._types import TaskData
from .noise import NoiseModel

__all__ = ["coordinate_task", "grid_inputs", "split_indices", "split_counts", "check_axis", "SPLITS"]

SPLITS = ("random", "time")
_SPLIT_STREAM = 1


def check_axis(values: Any, what: str) -> np.ndarray:
    """A grid coordinate as float64 (N,), checked: real, one axis, finite, strictly monotonic.

    Every grid point is one datum (x, t) -> u, so a repeated coordinate would give two targets
    for one input, and an unsorted one is a corrupt grid. Decreasing axes are accepted.

    Args:
        values: the coordinate values. what: how to name it in messages, e.g.
            ``"f.h5: key 'x-coordinate'"``.
    """
    a = np.asarray(values)
    if a.dtype.kind not in "fiu":
        kind = "complex" if a.dtype.kind == "c" else f"dtype {a.dtype}"
        raise DataFormatError(f"{what} holds {kind} values; expected real numbers")
    if a.ndim != 1:
        raise DataFormatError(f"{what} has shape {a.shape}; expected a 1-D coordinate array (N,)")
    if a.size == 0:
        raise DataFormatError(f"{what} is empty; expected at least one grid coordinate")
    a = a.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
        raise DataFormatError(f"{what} has {bad.size} NaN/inf values (first at index {bad[0]}); expected finite coordinates")
    with np.errstate(over="ignore"):
        step = np.diff(a)
    if step.size and not (np.all(step > 0) or np.all(step < 0)):
        i = int(np.flatnonzero(step == 0)[0]) if np.any(step == 0) else int(np.flatnonzero(np.sign(step) != np.sign(step[0]))[0])
        problem = "repeats" if step[i] == 0 else "is not monotonic:"
        raise DataFormatError(
            f"{what} {problem} {a[i]:g} at index {i} then {a[i + 1]:g} at index {i + 1}; expected distinct, "
            "sorted grid coordinates"
        )
    return a


def _check_sample(sample: xr.DataArray) -> xr.DataArray:
    if not isinstance(sample, xr.DataArray):
        raise SciPruneError(f"sample must be an xarray.DataArray with dims ('t', 'x'), got {type(sample).__name__}")
    if "var" in sample.dims and sample.sizes["var"] == 1:
        sample = sample.isel(var=0, drop=True)
    if set(sample.dims) != {"t", "x"}:
        raise SciPruneError(
            f"coordinate tasks need a one-variable 1D sample with dims ('t', 'x'), got dims {sample.dims}"
            + ("; pick one variable with sample.isel(var=k)" if "var" in sample.dims else "")
        )
    if "t" not in sample.coords or "x" not in sample.coords:
        raise SciPruneError("sample must carry coordinates 't' and 'x'")
    if sample.dtype.kind not in "fiu":
        raise SciPruneError(
            f"sample {_source(sample)} holds {'complex' if sample.dtype.kind == 'c' else sample.dtype} values; "
            "expected real numbers (pick the real part or modulus yourself if that is meant)"
        )
    for name in ("t", "x"):
        check_axis(sample[name].values, f"coordinate '{name}' of sample {_source(sample)}")
    return sample.transpose("t", "x")


def grid_inputs(sample: xr.DataArray) -> np.ndarray:
    """Physical inputs of every grid point.

    Args:
        sample: DataArray with dims ("t", "x") and coordinates t (Nt,), x (Nx,).

    Returns:
        float64 array (Nt*Nx, 2) with columns (x, t), in C order of the (t, x) grid: row
        ``k * Nx + i`` is ``(x[i], t[k])``.
    """
    sample = _check_sample(sample)
    t = np.asarray(sample["t"].values, dtype=np.float64)
    x = np.asarray(sample["x"].values, dtype=np.float64)
    tt, xx = np.meshgrid(t, x, indexing="ij")  # (Nt, Nx)
    return np.stack([xx.ravel(), tt.ravel()], axis=1)


def _count(fraction: float, n: int) -> int:
    return int(math.floor(fraction * n + 0.5))


def split_counts(
    n: int, test_fraction: float | None, val_fraction: float, unit: str = "points", about: str = ""
) -> tuple[int, int]:
    """(test, validation) counts of ``n`` items: ``round(fraction * n)``, round half up.

    ``test_fraction`` None means a separate test set (no item held out for it). Raises
    SciPruneError, naming the sizes and fractions, when ``n < 2``, when a positive fraction
    gives no item, or when nothing is left for training. ``unit`` names the items ("points",
    "images"); ``about`` is added after the count, e.g. ``" (Nt = 3, Nx = 1)"``.
    """
    if n < 2:
        one = unit[:-1] if n == 1 and unit.endswith("s") else unit
        raise SciPruneError(f"the data have only {n} {one}{about}: too few to split into training and test sets (at least 2)")
    n_test = 0 if test_fraction is None else _count(test_fraction, n)
    n_val = _count(val_fraction, n)
    for name, frac, got in (("test_fraction", test_fraction, n_test), ("val_fraction", val_fraction, n_val)):
        if frac is not None and frac > 0 and got == 0:
            part = "test" if name == "test_fraction" else "validation"
            raise SciPruneError(
                f"{name} {frac:g} of {n} {unit}{about} gives no {part} {unit}; use {name} >= {0.5 / n:.3g} "
                "or more data"
            )
    if n_test + n_val >= n:
        raise SciPruneError(
            f"test_fraction {test_fraction} and val_fraction {val_fraction} leave no training {unit} out of "
            f"{n}{about} ({n_test} test, {n_val} validation); their sum must be below 1"
        )
    return n_test, n_val


def _check_fraction(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise SciPruneError(f"{name} must be a number in [0, 1), got {value!r}") from None
    if not (0.0 <= value < 1.0):
        raise SciPruneError(f"{name} must be in [0, 1), got {value}")
    return value


def split_indices(
    t: np.ndarray,
    n_x: int,
    *,
    split: Literal["random", "time"] = "random",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    t_split: float | None = None,
) -> tuple[dict[str, np.ndarray], float | None]:
    """Split the points of an (Nt, Nx) grid into train/val/test.

    Random split: a seeded permutation; ``round(test_fraction * N)`` test points,
    ``round(val_fraction * N)`` validation points (round half up), the rest training.
    Time split (extrapolation in time): test = every point with ``t > t_split`` (default: the
    last ``round(test_fraction * Nt)`` time levels, at least one); validation =
    ``round(val_fraction * N)`` points drawn at random from the rest; the rest training.

    Args:
        t: time coordinate (Nt,).
        n_x: number of x points Nx.

    Returns:
        ({"train", "val", "test"} -> sorted int64 point indices into the C-ordered grid),
        the ``t_split`` used (None for the random split).
    """
    if split not in SPLITS:
        raise SciPruneError(f"split must be one of {', '.join(map(repr, SPLITS))}, got {split!r}")
    test_fraction = _check_fraction("test_fraction", test_fraction)
    val_fraction = _check_fraction("val_fraction", val_fraction)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    n_t = len(t)
    n = n_t * int(n_x)
    rng = np.random.default_rng([int(seed), _SPLIT_STREAM])
    if split == "random":
        n_test, n_val = split_counts(n, test_fraction, val_fraction, "points", f" (Nt = {n_t}, Nx = {int(n_x)})")
        perm = rng.permutation(n)
        parts = {"test": perm[:n_test], "val": perm[n_test:n_test + n_val], "train": perm[n_test + n_val:]}
        used_split = None
    else:
        if n_t < 2:
            raise SciPruneError(f"the time split needs at least 2 time levels, got Nt = {n_t} (Nx = {int(n_x)})")
        n_val = _count(val_fraction, n)
        if val_fraction > 0 and n_val == 0:
            raise SciPruneError(
                f"val_fraction {val_fraction:g} of {n} points (Nt = {n_t}, Nx = {int(n_x)}) gives no validation point; "
                f"use val_fraction >= {0.5 / n:.3g} or more data"
            )
        t_sorted = np.sort(t)
        if t_split is None:
            n_t_test = max(1, _count(test_fraction, n_t))
            if n_t_test >= n_t:
                raise SciPruneError(f"test_fraction {test_fraction} leaves no time level for training (Nt = {n_t})")
            used_split = float(t_sorted[n_t - n_t_test - 1])
        else:
            used_split = float(t_split)
            if not math.isfinite(used_split):
                raise SciPruneError(f"t_split must be a finite number, got {t_split!r}")
        point_t = np.repeat(t, n_x)
        is_test = point_t > used_split
        test = np.flatnonzero(is_test)
        rest = np.flatnonzero(~is_test)
        if len(test) == 0 or len(rest) == 0:
            raise SciPruneError(
                f"t_split {used_split:g} must lie inside the time range [{t_sorted[0]:g}, {t_sorted[-1]:g}) "
                "so that both the test (t > t_split) and training sets are non-empty"
            )
        if n_val >= len(rest):
            raise SciPruneError(
                f"val_fraction {val_fraction} asks for {n_val} validation points but only {len(rest)} "
                f"points have t <= {used_split:g}; lower val_fraction"
            )
        perm = rest[rng.permutation(len(rest))]
        parts = {"test": test, "val": perm[:n_val], "train": perm[n_val:]}
    return {k: np.sort(v).astype(np.int64) for k, v in parts.items()}, used_split


def coordinate_task(
    sample: xr.DataArray,
    *,
    noise: NoiseModel = NoiseModel("none", 0.0),
    split: Literal["random", "time"] = "random",
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    seed: int = 0,
    t_split: float | None = None,
    noise_seed: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> TaskData:
    """Regression set (x, t) -> u from one sample, scaled, split and noised.

    Inputs are scaled to [-1, 1] per column over the whole grid
    (:meth:`Scaling.to_unit_interval`); outputs are standardised with the mean and standard
    deviation of the *noisy training* targets only, so nothing leaks from the test set. The
    clean targets (``Y_*_clean``) use the same output scaling.

    Args:
        sample: DataArray with dims ("t", "x") (Nt, Nx), e.g. from :meth:`PDEBenchFile.sample`.
        noise: noise law applied to the targets of all points.
        split: ``"random"`` (point split) or ``"time"`` (test = t > t_split); see :func:`split_indices`.
        test_fraction, val_fraction: fractions of all Nt*Nx points (test_fraction picks the number
            of final time levels for the time split).
        seed: split seed, and noise seed unless ``noise_seed`` is given.
        t_split: time threshold for the time split (default from ``test_fraction``).
        noise_seed: seed of the noise draw (default ``seed``).
        dtype: floating dtype of the returned tensors.

    Returns:
        TaskData with X_* (n, 2) scaled (x, t) and Y_*, Y_*_clean (n, 1) scaled u.
    """
    sample = _check_sample(sample)
    if not isinstance(noise, NoiseModel):
        raise SciPruneError(f"noise must be a NoiseModel, got {type(noise).__name__}; use NoiseModel('uniform', 0.005)")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise SciPruneError(f"seed must be an integer, got {seed!r}")
    noise_seed = int(seed) if noise_seed is None else int(noise_seed)
    n_t, n_x = sample.sizes["t"], sample.sizes["x"]
    clean = np.asarray(sample.values, dtype=np.float64).reshape(-1, 1)
    if not np.all(np.isfinite(clean)):
        raise SciPruneError(f"sample {_source(sample)} contains NaN/inf values")
    noisy = noise.apply(clean, seed=noise_seed)
    inputs = grid_inputs(sample)
    idx, used_split = split_indices(
        sample["t"].values, n_x, split=split, test_fraction=test_fraction,
        val_fraction=val_fraction, seed=int(seed), t_split=t_split,
    )
    src = _source(sample)
    level = f"noise level {noise.level:g} ({noise.kind})" if noise.level else "no noise"
    in_scaling = _scaling(Scaling.to_unit_interval, inputs, f"sample {src}: the coordinates (x, t)")
    out_scaling = _scaling(Scaling.standardize, noisy[idx["train"]], f"sample {src} with {level}: the noisy training targets")
    with np.errstate(over="ignore", invalid="ignore"):
        X = in_scaling.forward(inputs)
        Y = out_scaling.forward(noisy)
        Yc = out_scaling.forward(clean)

    def tensor(a: np.ndarray, part: str) -> torch.Tensor:
        out = torch.as_tensor(a[idx[part]], dtype=dtype)
        if not bool(torch.isfinite(out).all()):
            raise SciPruneError(
                f"sample {src} with {level}: the scaled {part} values overflow {dtype} (NaN/inf); "
                "use a smaller noise level or rescale the data"
            )
        return out

    n = n_t * n_x
    counts = {k: int(len(v)) for k, v in idx.items()}
    residual = (noisy - clean).ravel()
    provenance: dict[str, Any] = {
        "source": {k: _jsonable(sample.attrs[k]) for k in ("file", "sample", "group", "layout") if k in sample.attrs},
        "variable": str(sample.name) if sample.name is not None else "u",
        "grid": {
            "nt": int(n_t), "nx": int(n_x),
            "t_range": [float(inputs[:, 1].min()), float(inputs[:, 1].max())],
            "x_range": [float(inputs[:, 0].min()), float(inputs[:, 0].max())],
            "point_order": "C order of (t, x): index = k_t * Nx + i_x",
        },
        "inputs": ["x", "t"],
        "outputs": ["u"],
        "noise": noise.to_dict(),
        "noise_law": noise.describe(),
        "noise_seed": noise_seed,
        "noise_rms": _rms(residual),
        "split": split,
        "t_split": used_split,
        "fractions": {
            "test_fraction": float(test_fraction), "val_fraction": float(val_fraction),
            **{k: counts[k] / n for k in ("train", "val", "test")},
        },
        "split_seed": int(seed),
        "split_rng": f"numpy default_rng([split_seed, {_SPLIT_STREAM}])",
        "n_points": n,
        "n_train": counts["train"], "n_val": counts["val"], "n_test": counts["test"],
        "output_scaling_from": "noisy training targets",
    }
    return TaskData(
        task="regression",
        X_train=tensor(X, "train"), Y_train=tensor(Y, "train"),
        X_val=tensor(X, "val"), Y_val=tensor(Y, "val"),
        X_test=tensor(X, "test"), Y_test=tensor(Y, "test"),
        Y_train_clean=tensor(Yc, "train"), Y_val_clean=tensor(Yc, "val"), Y_test_clean=tensor(Yc, "test"),
        input_scaling=in_scaling, output_scaling=out_scaling, provenance=provenance,
    )


def _scaling(make, values: np.ndarray, what: str) -> Scaling:
    """``make(values)`` (a Scaling constructor), its SciPruneError prefixed with ``what``."""
    try:
        return make(values)
    except SciPruneError as err:
        raise SciPruneError(f"{what}: {err}") from None


def _rms(r: np.ndarray) -> float:
    """sqrt(mean(r^2)) without overflow for values near the float64 limit."""
    with np.errstate(over="ignore"):
        plain = float(np.sqrt(np.mean(r**2)))
    if np.isfinite(plain):
        return plain
    top = float(np.max(np.abs(r)))
    return top * float(np.sqrt(np.mean((r / top) ** 2)))


def _source(sample: xr.DataArray) -> str:
    f, s = sample.attrs.get("file"), sample.attrs.get("sample")
    return f"{s} of {f}" if f is not None else "(in memory)"


def _jsonable(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v
