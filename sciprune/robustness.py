"""Which method to trust at which noise level: paired statistics over seeds and the two report tables.

A study's runs with the same seed share the dense network, the data split and the noise draw, so two
methods are compared on their *paired* differences ``d_s = e(m, s) - e(best, s)`` (oriented so that
``d > 0`` means ``m`` is worse), not on two independent samples.

* :func:`paired_bootstrap`: percentile interval of the mean of ``d`` from ``resamples`` resamples of the
  seeds with replacement (Efron & Tibshirani 1993, ch. 13), drawn from ``np.random.default_rng(seed)``.
* :func:`sign_test`: exact two-sided binomial test of "``m`` is worse on as many seeds as it is better"
  (``scipy.stats.binomtest`` on the seeds where ``d != 0``).
* :func:`recommend`: per (arch, stage, noise, ratio) cell the best method by mean, its margin over the
  next, and the verdict. The decision rule: the best method *wins* when, against every other method,
  the 95% bootstrap interval of the paired mean difference lies above 0; the methods whose interval
  does not are *tied* with it. With fewer than :data:`MIN_SEEDS` seeds no verdict is given. The sign
  test is reported beside it, not used to decide: with 5 seeds its smallest two-sided p-value is
  2/32 = 0.0625.
* :func:`prune_within`: the largest ratio each method reaches within ``(1 + tol)`` of the dense error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

__all__ = ["paired_bootstrap", "sign_test", "recommend", "prune_within", "crossovers", "lower_is_better",
           "MIN_SEEDS", "RESAMPLES", "LEVEL"]

#: Fewest seeds on which a cell gets a verdict.
MIN_SEEDS = 3
#: Bootstrap resamples per comparison, and the confidence level of the interval.
RESAMPLES = 10_000
LEVEL = 0.95


def lower_is_better(metric: str) -> bool:
    """Errors and losses: lower is better; accuracies: higher."""
    return "accuracy" not in metric


def paired_bootstrap(d: np.ndarray, *, resamples: int = RESAMPLES, level: float = LEVEL, seed: int = 0):
    """Percentile ``level`` interval of mean(d) over ``resamples`` resamples of the entries of ``d`` (the
    paired differences, one per seed) drawn with replacement: rows of
    ``default_rng(seed).integers(0, n, (resamples, n))`` index ``d``; the interval is the
    ``(1 - level)/2`` and ``(1 + level)/2`` quantiles (numpy's linear rule) of the row means.

    ``d`` of shape (n,) gives ``(low, high)`` floats; (n, k) gives two arrays of k, each column
    resampled with the same rows (every comparison of a cell sees the same resampled seeds)."""
    d = np.asarray(d, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, d.shape[0], size=(resamples, d.shape[0]))
    means = d[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return (float(lo), float(hi)) if d.ndim == 1 else (lo, hi)


def sign_test(d: np.ndarray) -> float:
    """Exact two-sided sign test of median(d) = 0: ``binomtest(#(d > 0), #(d != 0), 0.5)``; 1 when all d = 0."""
    from scipy.stats import binomtest

    d = np.asarray(d, dtype=np.float64)
    n = int(np.count_nonzero(d))
    return 1.0 if n == 0 else float(binomtest(int((d > 0).sum()), n, 0.5).pvalue)


@dataclass(frozen=True)
class Cell:
    """The verdict on one (arch, stage, noise, ratio) cell; ``margin`` = next mean - best mean (>= 0 in
    the metric's 'worse' direction); ``ci``/``sign_p``: best against the next-best."""

    verdict: str
    winner: str
    best: str
    best_mean: float
    next: str
    next_mean: float
    margin: float
    margin_rel: float
    ci_low: float
    ci_high: float
    sign_p: float
    n_seeds: int
    tied: tuple[str, ...]


def _cell(values: np.ndarray, methods: list[str], lower: bool, resamples: int, seed: int) -> Cell:
    """``values``: (seed, method) of one cell. Methods with a missing seed (NaN) are left out."""
    key = values if lower else -values
    keep = [k for k in range(len(methods)) if np.all(np.isfinite(key[:, k]))]
    nan = float("nan")
    if not keep:
        return Cell("no complete runs", "", "", nan, "", nan, nan, nan, nan, nan, nan, 0, ())
    means = key[:, keep].mean(axis=0)
    order = [keep[i] for i in np.argsort(means, kind="stable")]
    b = order[0]
    n = key.shape[0]
    sign = 1.0 if lower else -1.0
    best_mean = float(values[:, b].mean())
    if len(order) == 1:
        return Cell("only method" if n >= MIN_SEEDS else "too few seeds", methods[b] if n >= MIN_SEEDS else "",
                    methods[b], best_mean, "", nan, nan, nan, nan, nan, nan, n, ())
    d = key[:, order[1:]] - key[:, [b]]  # (seed, other method): > 0 where the other is worse
    low, high = paired_bootstrap(d, resamples=resamples, seed=seed)
    stats = {k: ((float(low[i]), float(high[i])), sign_test(d[:, i])) for i, k in enumerate(order[1:])}
    nx = order[1]
    next_mean = float(values[:, nx].mean())
    margin = sign * (next_mean - best_mean)
    (lo, hi), p = stats[nx]
    tied = tuple(methods[k] for k in order[1:] if not stats[k][0][0] > 0)
    if n < MIN_SEEDS:
        verdict, winner = "too few seeds", ""
    elif tied:
        verdict, winner = "tie: " + ", ".join((methods[b],) + tied), ""
    else:
        verdict, winner = methods[b], methods[b]
    rel = margin / abs(best_mean) if best_mean != 0 else nan
    return Cell(verdict, winner, methods[b], best_mean, methods[nx], next_mean, margin, rel, lo, hi, p, n, tied)


#: A variant whose achieved sparsity (``sparsity``) is more than this below the ratio, in some seed, did
#: not reach that ratio (LOBSTER thresholded to a ratio may stop short): it is left out of that cell.
SHORT_BY = 0.01


def short_of_ratio(ds: xr.Dataset) -> xr.DataArray | None:
    """True where a variant's achieved sparsity stayed more than :data:`SHORT_BY` below the ratio (dims
    arch, noise, seed, method, ratio), or None when the results record no ``sparsity``."""
    if "sparsity" not in ds:
        return None
    return ds["sparsity"] < ds["ratio"] - SHORT_BY


def reached(ds: xr.Dataset, metric: str) -> xr.DataArray:
    """``ds[metric]`` with NaN where the variant did not reach the ratio (:func:`short_of_ratio`)."""
    short = short_of_ratio(ds)
    return ds[metric] if short is None else ds[metric].where(~short)


def recommend(ds: xr.Dataset, metric: str, *, resamples: int = RESAMPLES, seed: int = 0) -> list[dict]:
    """One row (a dict, :class:`Cell`'s fields plus arch, stage, noise, ratio) per cell of ``ds[metric]``
    (dims arch, noise, seed, method, ratio, stage), in the order arch, stage, noise, ratio. A variant that
    did not reach a ratio in some seed (:func:`short_of_ratio`) is left out of that cell, like one with a
    missing seed; ``short`` lists them."""
    short = short_of_ratio(ds)
    v = reached(ds, metric).transpose("arch", "stage", "noise", "ratio", "seed", "method")
    methods = [str(m) for m in ds["method"].values]
    lower = lower_is_better(metric)
    rows = []
    for a, arch in enumerate(v["arch"].values):
        for s, stage in enumerate(v["stage"].values):
            for i, level in enumerate(v["noise"].values):
                for j, ratio in enumerate(v["ratio"].values):
                    cell = _cell(np.asarray(v.values[a, s, i, j], dtype=np.float64), methods, lower, resamples, seed)
                    missed = () if short is None else tuple(
                        str(m) for m in ds["method"].values
                        if bool(short.sel({"arch": arch, "noise": level, "ratio": ratio, "method": m}).any()))
                    rows.append({"arch": str(arch), "stage": str(stage), "noise": float(level), "ratio": float(ratio),
                                 **cell.__dict__, "short": missed})
    return rows


def crossovers(rows: list[dict]) -> list[dict]:
    """Where the best method by mean changes between consecutive noise levels at the same (arch, stage,
    ratio): ``{arch, stage, ratio, below, above, before, after, clear}`` with ``clear`` true when both
    levels have a distinguishable winner."""
    by_key: dict[tuple, list[dict]] = {}
    for r in rows:
        by_key.setdefault((r["arch"], r["stage"], r["ratio"]), []).append(r)
    out = []
    for (arch, stage, ratio), cells in by_key.items():
        cells = sorted(cells, key=lambda r: r["noise"])
        for prev, cur in zip(cells, cells[1:]):
            if prev["best"] and cur["best"] and prev["best"] != cur["best"]:
                out.append({"arch": arch, "stage": stage, "ratio": ratio, "below": prev["noise"], "above": cur["noise"],
                            "before": prev["best"], "after": cur["best"], "clear": bool(prev["winner"] and cur["winner"])})
    return out


def prune_within(ds: xr.Dataset, metric: str, tolerance: float) -> list[dict]:
    """Per (arch, stage, noise, method) the largest ratio r such that at r and at every smaller ratio of
    the grid the mean over seeds meets ``mean_s e(m, r, s) <= (1 + tol) mean_s e_dense(s)`` (``>= (1 - tol)
    x dense`` for an accuracy); ``max_ratio`` is NaN when the smallest ratio already misses it. The
    from-scratch baseline (``scratch_<metric>``, when stored) is a row named 'scratch' in both stages. A
    ratio a variant did not reach in some seed (:func:`short_of_ratio`) counts as missed.
    Needs ``dense_<metric>``; returns [] without it."""
    dense_name = f"dense_{metric}"
    if dense_name not in ds:
        return []
    lower = lower_is_better(metric)
    ratios = np.asarray(ds["ratio"].values, dtype=np.float64)
    order = np.argsort(ratios)
    rows = []

    def reach(curve: np.ndarray, dense: float) -> tuple[float, float]:
        ok = curve[order] <= (1 + tolerance) * dense if lower else curve[order] >= (1 - tolerance) * dense  # NaN: missed
        k = int(np.argmin(ok)) if not ok.all() else ok.size  # first failing ratio in increasing order
        return (float(ratios[order][k - 1]), float(curve[order][k - 1])) if k else (float("nan"), float("nan"))

    for arch in ds["arch"].values:
        for stage in ds["stage"].values:
            for level in ds["noise"].values:
                sel = {"arch": arch, "noise": level}
                dense = float(ds[dense_name].sel(sel).mean("seed", skipna=False))
                curves = reached(ds, metric).sel({**sel, "stage": stage}).mean("seed", skipna=False)
                named = [(str(m), curves.sel({"method": m}).values) for m in ds["method"].values]
                if f"scratch_{metric}" in ds:
                    named.append(("scratch", ds[f"scratch_{metric}"].sel(sel).mean("seed", skipna=False).values))
                for method, curve in named:
                    r, e = reach(np.asarray(curve, dtype=np.float64), dense)
                    rows.append({"arch": str(arch), "stage": str(stage), "noise": float(level), "method": method,
                                 "tolerance": tolerance, "max_ratio": r, "error_at_max": e, "dense_mean": dense})
    return rows
