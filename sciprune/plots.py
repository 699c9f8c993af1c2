"""Figures of a study: error against pruning ratio per method, and u(x, t) snapshots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["plot_loss_vs_ratio", "plot_fields"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_loss_vs_ratio(ds: xr.Dataset, path: str | Path, *, metric: str = "test_mse") -> Path:
    """One panel per noise level: ``metric`` against ratio for every method; dashed = just pruned,
    solid = fine-tuned; line = mean over seeds, band = min..max over seeds; grey line = dense."""
    plt = _pyplot()
    levels = ds["noise"].values
    fig, axes = plt.subplots(1, len(levels), figsize=(5 * len(levels), 4), squeeze=False, sharey=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ratios = ds["ratio"].values
    for ax, level in zip(axes[0], levels):
        for k, method in enumerate(ds["method"].values):
            c = colors[k % len(colors)]
            for stage, style in (("pruned", "--"), ("finetuned", "-")):
                v = ds[metric].sel({"noise": level, "method": method, "stage": stage})
                mean, lo, hi = v.mean("seed"), v.min("seed"), v.max("seed")
                label = f"{method} ({'fine-tuned' if stage == 'finetuned' else 'pruned'})"
                ax.plot(ratios, mean, style, color=c, marker="o", ms=3, label=label)
                ax.fill_between(ratios, lo, hi, color=c, alpha=0.15, lw=0)
        dense = ds[f"dense_{metric}"].sel({"noise": level})
        ax.axhline(float(dense.mean()), color="0.4", lw=1, label="dense")
        ax.set_title(f"noise level {level:g}")
        ax.set_xlabel("pruning ratio (fraction of weights removed)")
        ax.set_ylabel(metric)
        if "accuracy" not in metric:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_fields(fields: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, path: str | Path, *, title: str = "") -> Path:
    """Heat maps of u(x, t), one panel per entry of ``fields`` (each (Nt, Nx)), on one colour scale."""
    plt = _pyplot()
    n = len(fields)
    fig, axes = plt.subplots(1, n, figsize=(2.8 * n + 1.0, 3.2), squeeze=False, sharey=True, layout="constrained")
    values = list(fields.values())
    vmin = min(float(np.min(v)) for v in values)
    vmax = max(float(np.max(v)) for v in values)
    for ax, (name, u) in zip(axes[0], fields.items()):
        im = ax.pcolormesh(x, t, u, shading="auto", vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("x")
    axes[0][0].set_ylabel("t")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.9, label="u", pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
