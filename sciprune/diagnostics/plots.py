"""Figures of the diagnostics: loss line, loss map, Hessian eigenvalues, PSP-entropy histograms.

Each function draws with matplotlib's Agg backend, writes a PNG to ``path`` and returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import SciPruneError

__all__ = ["plot_loss_line", "plot_loss_map", "plot_eigenvalues", "plot_entropy_histograms"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, plt, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_loss_line(ds: xr.Dataset, path: str | Path, *, labels: Sequence[str] = ("A", "B"), log: bool = True,
                   title: str | None = None) -> Path:
    """Train (and test) loss against alpha from :func:`~sciprune.diagnostics.loss_line`; the two
    solutions (alpha = 0 and 1) marked and named by ``labels``."""
    if "train_loss" not in ds or "alpha" not in ds.dims:
        raise SciPruneError("plot_loss_line needs the Dataset of loss_line (train_loss on alpha)")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5), layout="constrained")
    a = ds["alpha"].values
    for var, style in (("train_loss", "-"), ("test_loss", "--")):
        if var in ds:
            v = ds[var].values
            ax.plot(a, v, style, marker="o", ms=3, label=var.replace("_", " "))
            for x, name in zip((0.0, 1.0), labels):
                y = float(ds[var].sel(alpha=x))
                ax.plot([x], [y], "k*", ms=10)
                if var == "train_loss":
                    ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 6))
    ax.set_xlabel(r"$\alpha$  ($\theta = (1-\alpha)\theta_A + \alpha\theta_B$)")
    ax.set_ylabel(f"loss ({ds.attrs.get('loss', '')})")
    if log and float(np.nanmin(ds["train_loss"].values)) > 0:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return _save(fig, path, plt)


def plot_loss_map(ds: xr.Dataset, path: str | Path, *, var: str = "train_loss", layer: str | None = None,
                  labels: Sequence[str] = ("A", "B"), levels: int = 30, log: bool = True,
                  title: str | None = None) -> Path:
    """Filled contours of ``var`` over (alpha, beta) from :func:`~sciprune.diagnostics.loss_map`
    (log10 when ``log`` and positive), both solutions marked at (0, 0) and (1, 0). For a per-layer
    variable (``mean_entropy``, ...) ``layer`` picks one layer; None averages over layers."""
    if var not in ds or not {"alpha", "beta"} <= set(ds[var].dims):
        raise SciPruneError(f"var must be a variable of loss_map's Dataset on (alpha, beta), got {var!r}; "
                            f"available: {sorted(str(k) for k in ds.data_vars)}")
    v = ds[var]
    if "layer" in v.dims:
        v = v.sel(layer=layer) if layer is not None else v.mean("layer")
    z = v.transpose("beta", "alpha").values
    use_log = log and bool(np.nanmin(z) > 0)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4), layout="constrained")
    cs = ax.contourf(ds["alpha"].values, ds["beta"].values, np.log10(z) if use_log else z, levels=levels, cmap="viridis")
    ax.contour(cs, colors="k", linewidths=0.3, alpha=0.5)
    fig.colorbar(cs, ax=ax, label=f"log10 {var}" if use_log else var)
    for (x, y), name in zip(((0.0, 0.0), (1.0, 0.0)), labels):
        ax.plot([x], [y], "w*", ms=12, mec="k")
        ax.annotate(name, (x, y), color="w", textcoords="offset points", xytext=(5, 5), fontweight="bold")
    ax.set_xlabel(r"$\alpha$ (towards B)")
    ax.set_ylabel(r"$\beta$ (random orthogonal direction)")
    if title:
        ax.set_title(title)
    return _save(fig, path, plt)


def plot_eigenvalues(eigenvalues, path: str | Path, *, log: bool = True, title: str | None = None) -> Path:
    """Bars of eigenvalues by rank (largest first), e.g. the top-k Hessian eigenvalues (paper Fig. 2b).

    ``eigenvalues``: a 1-D array, or a mapping model label -> 1-D array (grouped bars). Log scale
    when ``log`` and every value is positive.
    """
    series = dict(eigenvalues) if isinstance(eigenvalues, Mapping) else {"": eigenvalues}
    series = {k: np.sort(np.asarray(v, dtype=np.float64).ravel())[::-1] for k, v in series.items()}
    if not series or any(v.size == 0 for v in series.values()):
        raise SciPruneError("eigenvalues must be a non-empty 1-D array or a mapping label -> non-empty 1-D array")
    plt = _pyplot()
    k = max(v.size for v in series.values())
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * k * len(series) + 2), 3.5), layout="constrained")
    width = 0.8 / len(series)
    for j, (name, v) in enumerate(series.items()):
        ax.bar(np.arange(v.size) + (j - (len(series) - 1) / 2) * width, v, width, label=name or None)
    ax.set_xticks(np.arange(k), [str(i + 1) for i in range(k)])
    ax.set_xlabel("rank")
    ax.set_ylabel("eigenvalue")
    if log and all(bool(np.all(v > 0)) for v in series.values()):
        ax.set_yscale("log")
    if len(series) > 1 or next(iter(series)):
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    if title:
        ax.set_title(title)
    return _save(fig, path, plt)


def plot_entropy_histograms(datasets: xr.Dataset | Mapping[str, xr.Dataset], path: str | Path, *, bins: int = 30,
                            title: str | None = None) -> Path:
    """Histograms of the first-order PSP-entropy of the neurons, one panel per layer, one series per
    model; input: :func:`~sciprune.diagnostics.psp_entropy` Datasets (a mapping label -> Dataset)."""
    series = {"": datasets} if isinstance(datasets, xr.Dataset) else dict(datasets)
    if not series:
        raise SciPruneError("plot_entropy_histograms needs at least one psp_entropy Dataset")
    layers = [str(l) for l in next(iter(series.values()))["layer"].values]
    for name, ds in series.items():
        if any(f"entropy_{l}" not in ds for l in layers):
            raise SciPruneError(f"dataset {name!r} lacks first-order entropies for layers {layers}; run psp_entropy with 1 in order")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(layers), figsize=(4 * len(layers), 3.2), squeeze=False, layout="constrained")
    for ax, l in zip(axes[0], layers):
        values = [ds[f"entropy_{l}"].values for ds in series.values()]
        hi = max(float(np.max(v)) for v in values)
        edges = np.linspace(0.0, max(hi, 1e-9), bins + 1)
        for name, v in zip(series, values):
            ax.hist(v, bins=edges, alpha=0.5, label=name or None)
        ax.set_title(f"layer {l}", fontsize=10)
        ax.set_xlabel("PSP-entropy H(z) (bits, classes summed)")
    axes[0][0].set_ylabel("neurons")
    if len(series) > 1 or next(iter(series)):
        axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path, plt)
