"""Figures of a study: error against pruning ratio per method, and u(x, t) snapshots.

Every figure is written through a temporary file renamed onto its path (:class:`sciprune.results.atomic_path`),
so a failure (full disk, interruption) never leaves a partial image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["plot_loss_vs_ratio", "plot_fields", "draw_methods"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int) -> Path:
    """Write ``fig`` to ``path`` atomically and close it. The format follows the suffix (PNG for a suffix
    matplotlib does not know, such as a staging file's ``.tmp``)."""
    from .results import atomic_path

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        fmt = "png"
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=fmt)
    finally:
        _pyplot().close(fig)
    return path


def draw_methods(ax, v: xr.DataArray) -> None:
    """One line per method of ``v`` (dims seed, method, ratio) against the ratio: the mean over seeds,
    and a band from the smallest to the largest seed's value."""
    colors = _pyplot().rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", "-.", ":"]
    ratios = v["ratio"].values
    for k, method in enumerate(v["method"].values):
        c = colors[k % len(colors)]
        m = v.sel({"method": method})
        ax.plot(ratios, m.mean("seed"), styles[(k // len(colors)) % len(styles)], color=c, marker="o",
                ms=3, label=str(method))
        ax.fill_between(ratios, m.min("seed"), m.max("seed"), color=c, alpha=0.15, lw=0)


def plot_loss_vs_ratio(ds: xr.Dataset, path: str | Path, *, metric: str = "test_mse", title: str | None = None) -> Path:
    """``metric`` against pruning ratio for every method: one column per noise level, one row per
    stage (just pruned, fine-tuned). Line = mean over seeds, band = min..max over seeds; grey line =
    the dense network; black dotted = dense networks of equal weight count trained from scratch."""
    plt = _pyplot()
    levels = ds["noise"].values
    stages = list(ds["stage"].values)
    fig, axes = plt.subplots(len(stages), len(levels), figsize=(5 * len(levels), 3.6 * len(stages)),
                             squeeze=False, sharex=True, layout="constrained")
    ratios = ds["ratio"].values
    for col, level in enumerate(levels):
        for row, stage in enumerate(stages):
            ax = axes[row][col]
            draw_methods(ax, ds[metric].sel({"noise": level, "stage": stage}))
            if f"dense_{metric}" in ds:
                ax.axhline(float(ds[f"dense_{metric}"].sel({"noise": level}).mean()), color="0.4", lw=1, label="dense")
            if f"scratch_{metric}" in ds:
                ax.plot(ratios, ds[f"scratch_{metric}"].sel({"noise": level}).mean("seed"), ":", color="k",
                        marker="x", ms=4, label="dense, same weights, from scratch")
            ax.set_title(f"noise {level:g}, {'fine-tuned' if stage == 'finetuned' else 'just pruned'}", fontsize=10)
            if row == len(stages) - 1:
                ax.set_xlabel("pruning ratio (fraction of weights removed)")
            ax.set_ylabel(metric)
            if "accuracy" not in metric:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=120)


def plot_fields(fields: dict[str, np.ndarray], x: np.ndarray, t: np.ndarray, path: str | Path, *, title: str = "",
                columns: int = 5) -> Path:
    """Heat maps of u(x, t), one panel per entry of ``fields`` (each (Nt, Nx)), on one colour scale,
    ``columns`` panels to a row."""
    plt = _pyplot()
    n = len(fields)
    cols = min(n, columns)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols + 1.0, 2.9 * rows + 0.3), squeeze=False, sharex=True,
                             sharey=True, layout="constrained")
    values = list(fields.values())
    vmin = min(float(np.min(v)) for v in values)
    vmax = max(float(np.max(v)) for v in values)
    flat = axes.ravel()
    for ax, (name, u) in zip(flat, fields.items()):
        im = ax.pcolormesh(x, t, u, shading="auto", vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_title(name, fontsize=9)
    for ax in flat[n:]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("x")
    for ax in axes[:, 0]:
        ax.set_ylabel("t")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.9, label="u", pad=0.01)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path, dpi=110)
