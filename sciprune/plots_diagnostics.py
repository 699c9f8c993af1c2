"""Figures of a study's diagnostics (``[diagnostics]`` in a case file) for ``sciprune report``.

- :func:`plot_quantity_vs_ratio`: a quantity of the final networks (top Hessian eigenvalue, PSP norm
  or PSP-entropy of a layer, ...) against the pruning ratio, one panel per entry, one line per method
  (mean over seeds, band from the smallest to the largest seed), the dense network as a grey
  horizontal line (Tartaglione et al. 2020, Figs. 3-4);
- :func:`plot_loss_lines`: the training and test loss along the line from one variant's final network
  to another's, theta(alpha) = (1 - alpha) theta_a + alpha theta_b, one curve per ratio (their Fig. 2).

A panel's y axis is logarithmic when its values are all positive and span at least a decade. Every
figure is written atomically (:func:`sciprune.plots._save`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from .plots import _pyplot, _save, draw_methods

__all__ = ["Panel", "plot_quantity_vs_ratio", "plot_loss_lines", "spans_decades"]

_RATIO_LABEL = "pruning ratio (requested; achieved: `sparsity`)"


@dataclass(frozen=True)
class Panel:
    """One panel: ``values`` over (seed, method, ratio), the dense network's mean value (or None)."""

    title: str
    values: xr.DataArray
    dense: float | None = None


def spans_decades(*arrays) -> bool:
    """True when the finite values of ``arrays`` are all positive and max / min >= 10 (log scale)."""
    v = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays])
    v = v[np.isfinite(v)]
    return v.size > 0 and bool(np.all(v > 0)) and float(v.max()) >= 10 * float(v.min())


def _grid(n: int, columns: int, width: float, height: float, *, sharex: bool = True):
    plt = _pyplot()
    cols = min(n, columns)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False, sharex=sharex,
                             layout="constrained")
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, axes.ravel()[:n]


def plot_quantity_vs_ratio(panels: Sequence[Panel], path: str | Path, *, ylabel: str, title: str,
                           columns: int = 4) -> Path:
    """One panel per entry of ``panels`` (``columns`` to a row): each method's mean over seeds against
    the pruning ratio with a min..max band over seeds, and the dense network's value as a grey line."""
    fig, axes = _grid(len(panels), columns, 4.6, 3.5)
    for ax, panel in zip(axes, panels):
        draw_methods(ax, panel.values)
        if panel.dense is not None and np.isfinite(panel.dense):
            ax.axhline(panel.dense, color="0.4", lw=1, label="dense")
        if spans_decades(panel.values, [] if panel.dense is None else [panel.dense]):
            ax.set_yscale("log")
        ax.set_title(panel.title, fontsize=10)
        ax.set_xlabel(_RATIO_LABEL, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=9)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi=120)


def plot_loss_lines(train: xr.DataArray, test: xr.DataArray, path: str | Path, *, title: str, loss: str) -> Path:
    """``train`` and ``test`` over (seed, pair, ratio, alpha): one row per pair, the training loss left
    and the test loss right, one curve per ratio (mean over seeds, min..max band), alpha on x."""
    plt = _pyplot()
    pairs, ratios, alpha = train["pair"].values, train["ratio"].values, train["alpha"].values
    fig, axes = plt.subplots(len(pairs), 2, figsize=(10, 3.4 * len(pairs)), squeeze=False, sharex=True,
                             layout="constrained")
    cmap = plt.get_cmap("viridis")
    for row, pair in enumerate(pairs):
        a, _, b = str(pair).partition("->")
        for col, (split, v) in enumerate((("training", train), ("test", test))):
            ax = axes[row][col]
            line = v.sel({"pair": pair})
            for k, ratio in enumerate(ratios):
                c = cmap(k / max(len(ratios) - 1, 1) * 0.9)
                r = line.sel({"ratio": ratio})
                ax.plot(alpha, r.mean("seed"), color=c, marker="o", ms=2.5, label=f"ratio {ratio:g}")
                ax.fill_between(alpha, r.min("seed"), r.max("seed"), color=c, alpha=0.15, lw=0)
            if spans_decades(line):
                ax.set_yscale("log")
            ax.set_title(f"{pair}: {split} loss", fontsize=10)
            ax.set_xlabel(f"alpha (0: {a}, 1: {b})", fontsize=9)
            ax.set_ylabel(f"{split} {loss}", fontsize=9)
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=11)
    return _save(fig, path, dpi=120)
