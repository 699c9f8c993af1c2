"""Draw a study: figures and a Markdown summary of a results file written by ``sciprune run``.

The results Dataset has the metrics on dims (arch, noise, seed, method, ratio, stage), the dense
network's on (arch, noise, seed) and, when asked for, the from-scratch baseline's on (arch, noise,
seed, ratio). The summary ranks the methods in every (architecture, stage, noise level, ratio)
cell by the mean over seeds, gives the seed spread, and counts how often each method wins.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from .errors import DataFormatError
from .results import atomic_path

__all__ = ["report", "ranking", "default_metric"]

_DIMS = ("arch", "noise", "seed", "method", "ratio", "stage")


def default_metric(ds: xr.Dataset) -> str:
    """Clean-data test MSE for PDE surrogates (what a scientist wants predicted), test loss otherwise."""
    for name in ("test_mse_clean", "test_loss"):
        if name in ds:
            return name
    raise DataFormatError("the results hold neither test_mse_clean nor test_loss; pass the metric to rank by")


def _lower_is_better(metric: str) -> bool:
    return "accuracy" not in metric


def ranking(ds: xr.Dataset, metric: str) -> xr.Dataset:
    """Mean, standard deviation (over seeds) and rank (1 = best) of every method in every cell.

    Returns a Dataset on (arch, noise, method, ratio, stage) with ``mean``, ``std`` and ``rank``;
    ties share the lower rank. A method with a missing run (NaN) in a cell ranks last there.
    """
    v = ds[metric]
    mean = v.mean("seed", skipna=False)  # a cell with a missing run is not compared on fewer seeds
    std = v.std("seed", ddof=1, skipna=False) if v.sizes["seed"] > 1 else xr.zeros_like(mean)
    key = mean if _lower_is_better(metric) else -mean
    filled = key.fillna(np.inf)
    # rank = 1 + number of methods strictly better in the same cell
    rank = (filled.rename(method="other") < filled).sum("other") + 1
    return xr.Dataset({"mean": mean, "std": std, "rank": rank.transpose(*mean.dims)})


def _fmt(x: float) -> str:
    return "n/a" if not np.isfinite(x) else f"{x:.3g}"


def _summary(ds: xr.Dataset, metric: str, ranks: xr.Dataset, figures: list[str]) -> str:
    lines = [f"# Study report: {ds.attrs.get('case', {}).get('name', '') if isinstance(ds.attrs.get('case'), dict) else ''}".rstrip(": "), ""]
    lines += [
        f"Metric: `{metric}` ({'lower' if _lower_is_better(metric) else 'higher'} is better), mean over "
        f"{ds.sizes['seed']} seed(s) {list(map(int, ds['seed'].values))}"
        + ("; ± is the standard deviation over seeds." if ds.sizes["seed"] > 1 else " (no spread with one seed)."),
        f"Methods: {', '.join(map(str, ds['method'].values))}.",
    ]
    if "units" in ds.attrs:
        lines.append(f"Units: {ds.attrs['units']}.")
    if "device" in ds.attrs:
        lines.append(f"Run on {ds.attrs['device']} in {ds.attrs.get('wall_time_s', 'n/a')} s (this run; finished blocks loaded from disk count as 0).")
    lines.append("")
    for arch in ds["arch"].values:
        for stage in ds["stage"].values:
            title = "fine-tuned" if stage == "finetuned" else "just pruned"
            lines += [f"## {arch}, {title}", "", "Best method per noise level (columns) and ratio (rows):", ""]
            levels = ds["noise"].values
            lines.append("| ratio | " + " | ".join(f"noise {lvl:g}" for lvl in levels) + " |")
            lines.append("|---|" + "---|" * len(levels))
            for ratio in ds["ratio"].values:
                cells = []
                for lvl in levels:
                    sel = {"arch": arch, "noise": lvl, "ratio": ratio, "stage": stage}
                    r = ranks.sel(sel)
                    best = str(r["mean"]["method"].values[int(np.argmin(r["rank"].values))])
                    m, s = float(r["mean"].sel({"method": best})), float(r["std"].sel({"method": best}))
                    cell = f"{best} {_fmt(m)}" + (f" ± {_fmt(s)}" if ds.sizes["seed"] > 1 else "")
                    if f"scratch_{metric}" in ds:
                        sc = float(ds[f"scratch_{metric}"].sel({"arch": arch, "noise": lvl, "ratio": ratio}).mean())
                        cell += f" (scratch {_fmt(sc)})"
                    cells.append(cell)
                lines.append(f"| {ratio:g} | " + " | ".join(cells) + " |")
            lines.append("")
            if f"dense_{metric}" in ds:
                dense = [float(ds[f"dense_{metric}"].sel({"arch": arch, "noise": lvl}).mean()) for lvl in levels]
                lines += ["Dense network: " + ", ".join(f"noise {lvl:g}: {_fmt(d)}" for lvl, d in zip(levels, dense)) + ".", ""]
            wins = (ranks["rank"].sel({"arch": arch, "stage": stage}) == 1).sum(("noise", "ratio"))
            mean_rank = ranks["rank"].sel({"arch": arch, "stage": stage}).mean(("noise", "ratio"))
            order = np.argsort(mean_rank.values, kind="stable")
            lines += ["| method | cells won | mean rank |", "|---|---|---|"]
            for i in order:
                lines.append(f"| {ds['method'].values[i]} | {int(wins.values[i])} | {float(mean_rank.values[i]):.2f} |")
            lines.append("")
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def report(results: str | Path, out: str | Path | None = None, *, metric: str | None = None) -> Path:
    """Write figures (``<metric>_vs_ratio[_<arch>].png``), ``ranking.nc`` and ``report.md`` for a
    results file; return the path of ``report.md``. ``out`` defaults to the results file's folder."""
    from .plots import plot_loss_vs_ratio
    from .results import read_dataset, write_dataset

    results = Path(results)
    if not results.is_file():
        raise DataFormatError(f"{results}: no such results file (sciprune run writes <output>/results.nc)")
    ds = read_dataset(results)
    missing = [d for d in _DIMS if d not in ds.dims]
    if missing:
        raise DataFormatError(f"{results}: not a sciprune study result: dimension(s) {missing} missing; expected {list(_DIMS)}")
    metric = metric or default_metric(ds)
    if metric not in ds or set(ds[metric].dims) != set(_DIMS):
        choices = sorted(n for n in ds.data_vars if set(ds[n].dims) == set(_DIMS))
        raise DataFormatError(f"{results}: metric must be one of {choices}, got {metric!r}")
    out = Path(out) if out is not None else results.parent
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    single = ds.sizes["arch"] == 1
    for arch in ds["arch"].values:
        name = f"report_{metric}_vs_ratio{'' if single else '_' + str(arch)}.png"
        plot_loss_vs_ratio(ds.sel(arch=arch), out / name, metric=metric, title=None if single else f"architecture {arch}")
        figures.append(name)
    ranks = ranking(ds, metric)
    ranks.attrs.update(metric=metric, source=str(results))
    write_dataset(ranks, out / "ranking.nc")
    path = out / "report.md"
    with atomic_path(path) as tmp:
        Path(tmp).write_text(_summary(ds, metric, ranks, figures))
    return path
