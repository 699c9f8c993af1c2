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

from .errors import DataFormatError, SciPruneError
from .report_diagnostics import fmt as _fmt, is_real as _is_real
from .report_robustness import DEFAULT_TOLERANCE
from .results import atomic_path

__all__ = ["report", "ranking", "default_metric"]

_DIMS = ("arch", "noise", "seed", "method", "ratio", "stage")


def default_metric(ds: xr.Dataset) -> str:
    """Clean-data test MSE for PDE surrogates (what a scientist wants predicted), test loss otherwise."""
    for name in ("test_mse_clean", "test_loss"):
        if name in ds:
            return name
    raise DataFormatError("the results hold neither test_mse_clean nor test_loss; pass --metric, one of "
                          f"{_metrics(ds)}")


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


def _summary(ds: xr.Dataset, metric: str, ranks: xr.Dataset, figures: list[str]) -> str:
    lines = [f"# Study report: {_case_name(ds)}".rstrip(": "), ""]
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


def _case_name(ds: xr.Dataset) -> str:
    """The case name recorded in the results (the ``case`` attribute is stored as JSON), or ''."""
    from .report_robustness import case_attrs

    name = case_attrs(ds).get("name", "")
    return name if isinstance(name, str) else ""


def _read(results: Path) -> xr.Dataset:
    """The results file fully in memory, or one :class:`DataFormatError` line saying why it is not one."""
    from .results import read_dataset

    if "\x00" in str(results):
        raise DataFormatError(f"RESULTS: the path {str(results)!r} contains a NUL byte")
    if not results.exists():
        raise DataFormatError(f"{results}: no such results file (sciprune run writes <output>/results.nc)")
    if results.is_dir():
        raise DataFormatError(f"{results}: is a folder; give the results file (sciprune run writes <output>/results.nc)")
    if not results.is_file():
        raise DataFormatError(f"{results}: is not a regular file (a pipe or device?); give a results.nc file")
    if results.stat().st_size == 0:
        raise DataFormatError(f"{results}: the file is empty; rerun the study to write its results.nc")
    try:
        return read_dataset(results)
    except Exception as err:  # h5py/xarray raise OSError, ValueError, KeyError... for foreign or damaged files
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:160]
        raise DataFormatError(f"{results}: not a readable NetCDF4 results file ({reason}); "
                              "sciprune run and sciprune sweep write <output>/results.nc") from None


def _check_study(ds: xr.Dataset, results: Path) -> None:
    """The layout the report draws: the six dimensions, each non-empty with unique labels of the right kind."""
    missing = [d for d in _DIMS if d not in ds.dims]
    if missing:
        raise DataFormatError(f"{results}: not a sciprune study result: dimension(s) {missing} missing; expected {list(_DIMS)}")
    for dim in _DIMS:
        if ds.sizes[dim] == 0:
            raise DataFormatError(f"{results}: the {dim!r} dimension is empty (no {dim} was run); nothing to report")
        if dim not in ds.coords:
            raise DataFormatError(f"{results}: the {dim!r} dimension has no coordinate labels")
        labels = ds[dim].values
        if len(np.unique(labels)) != len(labels):
            raise DataFormatError(f"{results}: the {dim!r} labels {labels.tolist()[:10]} repeat; each "
                                  f"{dim} must appear once (was a grid run twice into one file?)")
    for dim in ("noise", "ratio", "seed"):
        v = ds[dim].values
        if not _is_real(v) or not np.all(np.isfinite(v)) or (dim == "seed" and not np.all(v == np.round(v))):
            raise DataFormatError(f"{results}: the {dim!r} labels must be finite numbers{' (integers)' if dim == 'seed' else ''}, "
                                  f"got {v.tolist()[:10]}")


def _metrics(ds: xr.Dataset) -> list[str]:
    return sorted(str(n) for n in ds.data_vars if set(ds[n].dims) == set(_DIMS) and _is_real(ds[n].values))


def _check_metric(ds: xr.Dataset, metric: str, results: Path) -> None:
    from .outputs import check_name

    if metric not in _metrics(ds):
        raise DataFormatError(f"{results}: --metric must be one of {_metrics(ds)}, got {metric!r}")
    check_name(metric, "--metric")  # it becomes part of the figure's file name
    for prefix, dims in (("dense_", {"arch", "noise", "seed"}), ("scratch_", {"arch", "noise", "seed", "ratio"})):
        name = prefix + metric
        if name in ds and (set(ds[name].dims) != dims or not _is_real(ds[name].values)):
            raise DataFormatError(f"{results}: variable {name!r} must hold numbers on dims {sorted(dims)}, "
                                  f"got {ds[name].dtype} on {list(ds[name].dims)}")


def _suffixes(ds: xr.Dataset, single: bool):
    """``suffix(arch, level)``: what tells a figure's architecture and noise level apart in its file name
    ('_<arch>' with several architectures, '_noise<level>' with several noise levels)."""
    levels = [f"{lvl:g}" for lvl in ds["noise"].values]
    if len(set(levels)) < len(levels):  # labels equal to 6 digits: number them instead
        levels = [str(i) for i in range(len(levels))]
    by_level = dict(zip(map(float, ds["noise"].values), levels))

    def suffix(arch: str, level: float) -> str:
        return ("" if single else f"_{arch}") + ("" if len(levels) == 1 else f"_noise{by_level[level]}")

    return suffix


def report(results: str | Path, out: str | Path | None = None, *, metric: str | None = None,
           tolerance: float = DEFAULT_TOLERANCE) -> Path:
    """Write figures (``report_<metric>_vs_ratio[_<arch>].png``), ``ranking.nc`` and ``report.md`` for a
    results file; return the path of ``report.md``. ``out`` defaults to the results file's folder. A
    study with ``[diagnostics]`` also gets, per architecture and noise level, a figure and a table per
    quantity (:mod:`sciprune.report_diagnostics`). Every study gets the noise-robustness part
    (:mod:`sciprune.report_robustness`): ``recommendation.csv`` (which method per noise level and ratio,
    with paired statistics over seeds), ``tolerance.csv`` (the largest ratio within ``(1 + tolerance)``
    of the dense error) and, with two noise levels or more, ``robustness_<metric>*.png``.

    The results and ``metric`` are checked and the output folder prepared before anything is drawn;
    every file is staged as a temporary file and all are renamed into place at the end, so a failure
    leaves no partial or temporary file."""
    from contextlib import ExitStack

    from .outputs import check_name, child, prepare_output
    from .plots import plot_loss_vs_ratio
    from .report_diagnostics import check_diagnostics, plan
    from .report_robustness import check_tolerance, plan as robustness_plan
    from .results import write_dataset

    tolerance = check_tolerance(tolerance)
    results = Path(results)
    ds = _read(results)
    _check_study(ds, results)
    metric = default_metric(ds) if metric is None else metric
    _check_metric(ds, metric, results)
    check_diagnostics(ds, results)
    single = ds.sizes["arch"] == 1
    names = {arch: f"report_{metric}_vs_ratio.png" if single
             else f"report_{metric}_vs_ratio_{check_name(str(arch), f'architecture label in {results}')}.png"
             for arch in ds["arch"].values}
    diagnostics = plan(ds, metric, lambda arch: names[arch], _suffixes(ds, single))
    robust = robustness_plan(ds, metric, lambda arch: "" if single else f"_{arch}", tolerance)
    out = prepare_output(results.parent if out is None else out, is_dir=True,
                         what="--out" if out is not None else "the report folder (beside RESULTS)")
    ranks = ranking(ds, metric)
    ranks.attrs.update(metric=metric, source=str(results))
    path = child(out, "report.md")
    try:
        with ExitStack() as staged:

            def stage(name: str) -> Path:
                return staged.enter_context(atomic_path(child(out, name)))

            for arch, name in names.items():
                plot_loss_vs_ratio(ds.sel(arch=arch), stage(name), metric=metric,
                                   title=None if single else f"architecture {arch}")
            for name, draw in {**diagnostics.figures, **robust.figures}.items():
                draw(stage(name))
            for name, table in robust.tables.items():
                Path(stage(name)).write_text(table)
            write_dataset(ranks, stage("ranking.nc"))
            text = _summary(ds, metric, ranks, list(names.values()))
            text += "\n" + "\n".join(robust.text)  # before the diagnostics: a study's report without them is a prefix
            text += ("\n" + "\n".join(diagnostics.text)) if diagnostics.text else ""
            Path(stage("report.md")).write_text(text)
    except OSError as err:  # full disk, quota, I/O error: every staged file is already removed
        raise SciPruneError(f"{out}: cannot write the report: {err.strerror or err}") from None
    return path
