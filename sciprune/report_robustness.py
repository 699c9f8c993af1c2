"""The noise-robustness part of ``sciprune report``: figures against the noise level, the recommendation
table (which method at which noise level and ratio, :func:`sciprune.robustness.recommend`) and the
"how far can I prune" table (:func:`sciprune.robustness.prune_within`), as Markdown and CSV.

The signal-to-noise ratio of a level is that of the clean field u: ``rms(u) / std`` with the noise's
standard deviation ``a / sqrt(3)`` for ``uniform`` (U(-a, a)) and ``a`` for ``gaussian``, and ``1 / a``
for ``relative-gaussian``. ``rms(u)`` is read from the results' ``field_rms`` attribute; without it the
additive kinds are drawn against the level alone and report.md says so.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import xarray as xr

from .data.noise import NoiseModel
from .report_diagnostics import fmt
from .robustness import LEVEL, MIN_SEEDS, RESAMPLES, SHORT_BY, crossovers, prune_within, recommend

__all__ = ["Plan", "plan", "snr", "check_tolerance", "noise_kind", "case_attrs", "DEFAULT_TOLERANCE"]

#: Default of ``--tolerance``: within 10% of the dense network's error.
DEFAULT_TOLERANCE = 0.1
#: The other target of a regression metric (noisy <-> clean), drawn beside it.
PARTNERS = {"test_mse_clean": "test_mse", "test_mse": "test_mse_clean"}
_STAGE = {"finetuned": "fine-tuned", "pruned": "just pruned"}


def check_tolerance(tolerance) -> float:
    """``tolerance`` as a float in (0, inf), or one :class:`SciPruneError` line naming ``--tolerance``."""
    from .checks import check_number

    return check_number(tolerance, "--tolerance", positive=True,
                        meaning=" (the allowed excess over the dense error, 0.1 = 10%)")


def case_attrs(ds: xr.Dataset) -> dict:
    """The resolved case recorded in the results (the ``case`` attribute, stored as JSON), or {}."""
    case = ds.attrs.get("case")
    if isinstance(case, str):
        try:
            case = json.loads(case)
        except ValueError:
            return {}
    return case if isinstance(case, dict) else {}


def noise_kind(ds: xr.Dataset) -> str:
    """The case's noise law (``uniform``, ``gaussian``, ``relative-gaussian``, ``none``) or '' if unrecorded."""
    noise = case_attrs(ds).get("noise")
    kind = noise.get("kind", "") if isinstance(noise, dict) else ""
    return kind if isinstance(kind, str) else ""


def snr(ds: xr.Dataset) -> np.ndarray | None:
    """SNR of the field at every noise level (inf at a = 0), or None when it cannot be told (see module)."""
    kind = noise_kind(ds)
    levels = np.asarray(ds["noise"].values, dtype=np.float64)
    rms = ds.attrs.get("field_rms")
    rms = float(rms) if isinstance(rms, (int, float, np.number)) and math.isfinite(float(rms)) and float(rms) > 0 else None
    with np.errstate(divide="ignore"):
        if kind == "relative-gaussian":
            return 1.0 / levels
        if kind in ("uniform", "gaussian") and rms is not None:
            return rms / np.array([NoiseModel(kind, float(a)).std for a in levels])
    return None


def _snr_line(ds: xr.Dataset, values: np.ndarray | None) -> str:
    kind = noise_kind(ds) or "not recorded"
    if values is not None:
        how = {"uniform": "rms(u) / (a / sqrt(3))", "gaussian": "rms(u) / sigma", "relative-gaussian": "1 / sigma"}[kind]
        rms = f" with rms(u) = {fmt(float(ds.attrs['field_rms']))}" if kind != "relative-gaussian" else ""
        return f"Noise kind: {kind}; SNR of the field = {how}{rms}."
    return (f"Noise kind: {kind}; the noise axis is the level alone: the results record no `field_rms` "
            "(the rms of the clean field), so no signal-to-noise ratio is shown.")


@dataclass
class Plan:
    """What the robustness part adds: figures (file name -> draw(path)), CSV texts and report.md lines."""

    figures: dict[str, Callable] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else "; ".join(v) if isinstance(v, tuple) else v)
                        for k, v in r.items()})
    return buf.getvalue()


def _head(level: float, s: float | None) -> str:
    return f"noise {level:g}" + ("" if s is None else f" (SNR {'∞' if not np.isfinite(s) else f'{s:.3g}'})")


def _verdict_cell(r: dict) -> str:
    if r["verdict"] == "too few seeds":
        return f"too few seeds (best {r['best']})" if r["best"] else "too few seeds"
    if r["winner"]:
        return f"**{r['winner']}**" + (f" (+{100 * r['margin_rel']:.3g}%)" if np.isfinite(r["margin_rel"]) else "")
    return r["verdict"]


def _grid(rows: list[dict], levels: list[float], heads: list[str], row_key: str, row_labels: list, cell) -> list[str]:
    lines = [f"| {row_key} | " + " | ".join(heads) + " |", "|---|" + "---|" * len(levels)]
    index = {(r[row_key], r["noise"]): r for r in rows}
    for label in row_labels:
        lines.append(f"| {label if isinstance(label, str) else f'{label:g}'} | "
                     + " | ".join(cell(index[(label, lvl)]) for lvl in levels) + " |")
    return lines


def _crossover_text(moves: list[dict]) -> list[str]:
    if not moves:
        return ["No crossover: the best method by mean is the same at every noise level.", ""]
    return ["Crossovers (the best method by mean changes between two noise levels):", ""] + [
        f"- ratio {c['ratio']:g}: {c['before']} at noise {c['below']:g}, {c['after']} at noise {c['above']:g} "
        + ("(both distinguishable)" if c["clear"] else "(not both distinguishable)") for c in moves] + [""]


def _tables_text(ds: xr.Dataset, metric: str, rec: list[dict], reach: list[dict], tolerance: float,
                 snr_values: np.ndarray | None) -> list[str]:
    levels = [float(v) for v in ds["noise"].values]
    heads = [_head(lvl, None if snr_values is None else float(snr_values[i])) for i, lvl in enumerate(levels)]
    ratios = [float(r) for r in ds["ratio"].values]
    n = ds.sizes["seed"]
    lines = [f"Verdicts compare `{metric}` over the {n} seed(s) paired by seed (same dense network, split and noise): "
             f"a method in bold wins when the {LEVEL:.0%} bootstrap interval ({RESAMPLES} resamples) of its paired mean "
             "difference to every other method lies above 0; (+x%) is its margin over the next-best mean. "
             "'tie: A, B' lists the best method and those it cannot be told from; fewer than "
             f"{MIN_SEEDS} seeds give no verdict."
             + (" Intervals and sign-test p-values: recommendation.csv." if len(levels) > 1 else ""), ""]
    for arch in ds["arch"].values:
        for stage in ("finetuned", "pruned"):
            if stage not in ds["stage"].values:
                continue
            cells = [r for r in rec if r["arch"] == str(arch) and r["stage"] == stage]
            lines += [f"### Which method: {arch}, {_STAGE[stage]}", ""]
            lines += _grid(cells, levels, heads, "ratio", ratios, _verdict_cell) + [""]
            missed = {}
            for r in cells:
                for m in r.get("short", ()):
                    missed.setdefault(m, set()).add(r["ratio"])
            if missed:
                lines += ["Left out where they did not reach the ratio (achieved sparsity more than "
                          f"{SHORT_BY:g} below it in some seed): " + "; ".join(
                              f"{m} at {', '.join(f'{x:g}' for x in sorted(rs))}" for m, rs in missed.items()) + ".", ""]
            if len(levels) > 1:
                lines += _crossover_text(crossovers(cells))
    if not reach:
        return lines + [f"No `dense_{metric}` in the results: the tolerance table needs the dense network's error.", ""]
    better = "<= (1 + tol)" if "accuracy" not in metric else ">= (1 - tol)"
    lines += [f"Largest ratio within the tolerance {tolerance:g} of the dense network: mean over seeds {better} x "
              "the dense mean, at that ratio and every smaller one of the grid ('none': not even the smallest); "
              "a ratio a variant did not reach counts as missed. "
              + ("Values: tolerance.csv." if len(levels) > 1 else ""), ""]
    for arch in ds["arch"].values:
        for stage in ("finetuned", "pruned"):
            cells = [r for r in reach if r["arch"] == str(arch) and r["stage"] == stage]
            if not cells:
                continue
            methods = list(dict.fromkeys(r["method"] for r in cells))
            lines += [f"### How far can I prune: {arch}, {_STAGE[stage]} (tolerance {tolerance:g})", ""]
            dense = {r["noise"]: r["dense_mean"] for r in cells}
            lines += _grid(cells, levels, heads, "method", methods,
                           lambda r: "none" if not np.isfinite(r["max_ratio"]) else f"{r['max_ratio']:g}")
            lines += ["| dense error | " + " | ".join(fmt(dense[lvl]) for lvl in levels) + " |", ""]
    return lines


def plan(ds: xr.Dataset, metric: str, suffix: Callable[[str], str], tolerance: float) -> Plan:
    """The robustness figures (with two noise levels or more), tables and text of ``ds`` for ``metric``;
    ``suffix(arch)`` tells architectures apart in file names ('' for a single one)."""
    from .plots_robustness import plot_robustness

    out = Plan()
    values = snr(ds)
    rec = recommend(ds, metric)
    reach = prune_within(ds, metric, tolerance)
    out.text = ["## Noise robustness", "", _snr_line(ds, values), ""]
    if ds.sizes["noise"] < 2:  # the old report's files, and its report.md with this section after it
        out.text += [f"The robustness figures need two noise levels or more; this study has one "
                     f"(noise {float(ds['noise'].values[0]):g}). The tables below are not written as CSV.", ""]
    else:
        out.tables = {"recommendation.csv": _csv(rec), "tolerance.csv": _csv(reach)}
        partner = PARTNERS.get(metric)
        metrics = [metric] + ([partner] if partner in ds and set(ds[partner].dims) == set(ds[metric].dims) else [])
        label = "noise level" + (f" ({noise_kind(ds)})" if noise_kind(ds) else "")
        for arch in ds["arch"].values:
            sub = ds.sel(arch=arch)
            title = None if not suffix(str(arch)) else f"architecture {arch}"
            for m in metrics:
                for relative in (False, True):
                    if relative and f"dense_{m}" not in ds:
                        continue
                    name = f"robustness_{m}{'_vs_dense' if relative else ''}{suffix(str(arch))}.png"
                    out.figures[name] = (lambda path, sub=sub, m=m, relative=relative, title=title: plot_robustness(
                        sub, path, metric=m, relative=relative, snr=values, noise_label=label, title=title))
        both = ("" if len(metrics) < 2 else f" Both `{metric}` and `{metrics[-1]}` are drawn: the error against the "
                "noisy targets cannot fall below the noise variance, the one against the clean field shows whether "
                "a network fits the noise.")
        out.text += ["Figures: error against noise level per ratio (rows: just pruned, fine-tuned; line = mean over "
                     "seeds, band = min..max over seeds; grey = dense network); `_vs_dense`: the error divided by "
                     "the dense network's at the same seed and noise level, then mean and min..max over seeds."
                     + both, ""] + [f"![{f}]({f})" for f in out.figures] + [""]
    out.text += _tables_text(ds, metric, rec, reach, tolerance, values)
    return out
