"""Robustness figures: error against noise level, one panel per pruning ratio, one row per stage.

Line = mean over seeds, band = smallest to largest seed's value (as :func:`sciprune.plots.draw_methods`).
The noise axis is symmetric-log (linear below the smallest non-zero level, so a = 0 is drawn); where the
signal-to-noise ratio of the field is known, a top axis gives it at every level.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .plots import _pyplot, _save

__all__ = ["plot_robustness", "per_seed_ratio"]


def per_seed_ratio(ds: xr.Dataset, metric: str) -> xr.DataArray:
    """``metric / dense_metric`` seed by seed: e(m, r, s) / e_dense(s) at the same arch and noise level."""
    return ds[metric] / ds[f"dense_{metric}"]


def _snr_text(v: float) -> str:
    return "∞" if not np.isfinite(v) else f"{v:.3g}"


def _noise_axis(ax, levels: np.ndarray, snr: np.ndarray | None, top: bool) -> None:
    positive = levels[levels > 0]
    if positive.size:
        ax.set_xscale("symlog", linthresh=float(positive.min()), linscale=1.0)
    ax.set_xticks(levels, [f"{lvl:g}" for lvl in levels], fontsize=7, rotation=45)
    ax.minorticks_off()
    if snr is not None and top:
        sec = ax.secondary_xaxis("top")
        sec.set_xticks(levels, [_snr_text(s) for s in snr], fontsize=7, rotation=45)
        sec.set_xlabel("SNR of the field", fontsize=8)


def plot_robustness(ds: xr.Dataset, path: str | Path, *, metric: str, relative: bool = False,
                    snr: np.ndarray | None = None, noise_label: str = "noise level", title: str | None = None) -> Path:
    """``metric`` of one architecture (``ds`` without an arch dim) against the noise level: rows = stages,
    columns = ratios, one line per method; grey line and band = the dense network. With ``relative``,
    ``metric / dense_metric`` per seed (then mean and min..max over seeds) and a grey line at 1."""
    plt = _pyplot()
    levels = np.asarray(ds["noise"].values, dtype=np.float64)
    order = np.argsort(levels)
    levels = levels[order]
    snr = None if snr is None else np.asarray(snr)[order]
    ds = ds.isel(noise=order)
    stages, ratios = list(ds["stage"].values), list(ds["ratio"].values)
    values = per_seed_ratio(ds, metric) if relative else ds[metric]
    fig, axes = plt.subplots(len(stages), len(ratios), figsize=(3.2 * len(ratios) + 0.6, 3.0 * len(stages) + 0.6),
                             squeeze=False, sharex=True, sharey="row", layout="constrained")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", "-.", ":"]
    for row, stage in enumerate(stages):
        for col, ratio in enumerate(ratios):
            ax = axes[row][col]
            v = values.sel({"stage": stage, "ratio": ratio})
            for k, method in enumerate(ds["method"].values):
                m = v.sel({"method": method})
                c = colors[k % len(colors)]
                ax.plot(levels, m.mean("seed"), styles[(k // len(colors)) % len(styles)], color=c, marker="o", ms=3,
                        label=str(method))
                ax.fill_between(levels, m.min("seed"), m.max("seed"), color=c, alpha=0.15, lw=0)
            if relative:
                ax.axhline(1.0, color="0.4", lw=1, label="dense")
            elif f"dense_{metric}" in ds:
                d = ds[f"dense_{metric}"]
                ax.plot(levels, d.mean("seed"), color="0.4", lw=1.2, label="dense")
                ax.fill_between(levels, d.min("seed"), d.max("seed"), color="0.4", alpha=0.12, lw=0)
            _noise_axis(ax, levels, snr, top=row == 0)
            ax.set_title(f"ratio {ratio:g}, {'fine-tuned' if stage == 'finetuned' else 'just pruned'}", fontsize=9)
            if row == len(stages) - 1:
                ax.set_xlabel(noise_label, fontsize=8)
            if col == 0:
                ax.set_ylabel(f"{metric} / dense" if relative else metric)
            if "accuracy" not in metric:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=6, loc="best")
    if title:
        fig.suptitle(title)
    return _save(fig, path, dpi=110)
