"""The diagnostics part of ``sciprune report``: checks, figures and tables of a study's ``[diagnostics]``.

A study with diagnostics (:mod:`sciprune.study_diagnostics`, :mod:`sciprune.study_records`) holds, for
every final (fine-tuned) network, ``hessian_eig`` over (arch, noise, seed, method, ratio, eig),
``psp_norm``, ``psp_entropy``, ``psp_pair_entropy`` over (..., layer), ``kfac_radius`` over (..., linear),
``inference_us`` over (..., batch), the same with a ``dense_`` prefix over (arch, noise, seed, eig |
layer | linear | batch), and ``line_train_loss`` / ``line_test_loss`` over (arch, noise, seed, pair,
ratio, alpha). :func:`plan` lays out, per architecture and noise level, one figure per
quantity against the pruning ratio and a table per quantity (mean ± sample standard deviation over
seeds, per method and ratio); a quantity with no finite value there (PSP-entropy of a tanh network) is
left out and the report says so. Results without these variables give no figure and no text.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import DataFormatError


def fmt(x: float) -> str:
    """A table cell: three significant digits, "n/a" for a missing value."""
    return "n/a" if not np.isfinite(x) else f"{x:.3g}"


def is_real(values: np.ndarray) -> bool:
    """Whether an array holds real numbers (integers or floats, not booleans)."""
    return values.dtype != bool and (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating))

__all__ = ["expected_dims", "check_diagnostics", "plan", "Plan", "barrier"]

_LEAD = ("arch", "noise", "seed")
_LINES = ("line_train_loss", "line_test_loss")
_INNER = ("eig", "layer", "linear", "batch", "pair", "alpha")  # the dimensions of the diagnostics beside the study's
#: quantity -> (heading, y-axis label)
_TITLES = {
    "hessian_eig": ("Top Hessian eigenvalue of the training loss", "Hessian eigenvalue"),
    "psp_norm": ("PSP L2 norm per hidden layer, the mean over neurons of E[z²]", "PSP norm E[z²]"),
    "psp_entropy": ("First-order PSP-entropy per hidden layer (bits)", "PSP-entropy (bits)"),
    "psp_pair_entropy": ("Second-order (neuron pair) PSP-entropy per hidden layer (bits)", "pair PSP-entropy (bits)"),
    "kfac_radius": ("K-FAC spectral radius λmax(A)·λmax(G) of the training loss", "K-FAC radius"),
    "inference_us": ("Forward-pass time per row, float32, wall clock (µs)", "µs per row"),
}
#: the panel title of each label of a diagnostic's own dimension
_PANEL = {"layer": "hidden layer {}".format, "linear": "Linear layer {}".format,
          "batch": lambda b: {"one": "one row per call", "all": "the whole test split in one call"}.get(str(b), str(b))}


def expected_dims() -> dict[str, tuple[str, ...]]:
    """Every diagnostics variable a study may write, and its dimensions."""
    from .study_diagnostics import DIAGNOSTICS

    out = {}
    for name, dim in DIAGNOSTICS.items():
        out[name] = _LEAD + ("method", "ratio", dim)
        out[f"dense_{name}"] = _LEAD + (dim,)
    out.update({name: _LEAD + ("pair", "ratio", "alpha") for name in _LINES})
    return out


def check_diagnostics(ds: xr.Dataset, results: Path) -> None:
    """Each diagnostics variable present holds numbers on its dimensions, which have unique labels
    (``alpha``: finite numbers); else one :class:`DataFormatError` line naming the variable."""

    for name, dims in expected_dims().items():
        if name not in ds:
            continue
        v = ds[name]
        if set(v.dims) != set(dims) or len(v.dims) != len(dims) or not is_real(v.values):
            raise DataFormatError(f"{results}: variable {name!r} must hold numbers on dims {list(dims)}, "
                                  f"got {v.dtype} on {list(v.dims)}")
        for dim in [d for d in dims if d in _INNER]:
            if dim not in ds.coords or len(np.unique(ds[dim].values)) != ds.sizes[dim]:
                raise DataFormatError(f"{results}: the {dim!r} dimension of variable {name!r} needs unique "
                                      "coordinate labels")
    if any(n in ds for n in _LINES):
        a = ds["alpha"].values
        if not is_real(a) or not np.all(np.isfinite(a)):
            raise DataFormatError(f"{results}: the 'alpha' labels of the loss lines must be finite numbers, "
                                  f"got {a.tolist()[:10]}")


def barrier(line: xr.DataArray) -> xr.DataArray:
    """Loss barrier of a line over ``alpha``: max_alpha L(alpha) - max(L(0), L(1)) (0 when none)."""
    ends = np.maximum(line.isel(alpha=0), line.isel(alpha=-1))
    return line.max("alpha", skipna=False) - ends


@dataclass
class Plan:
    """Figures to draw (file name -> drawing function of the staged path) and the report's text."""

    figures: dict[str, Callable[[Path], Path]] = field(default_factory=dict)
    text: list[str] = field(default_factory=list)


def _stats(v: xr.DataArray) -> tuple[xr.DataArray, xr.DataArray | None]:
    """Mean and sample standard deviation (n - 1) over seeds; a missing run (NaN) gives n/a."""
    mean = v.mean("seed", skipna=False)
    return mean, (v.std("seed", ddof=1, skipna=False) if v.sizes["seed"] > 1 else None)


def _cell(mean: float, std: float | None) -> str:

    return fmt(mean) + ("" if std is None else f" ± {fmt(std)}")


def _table(v: xr.DataArray, row_dims: tuple[str, ...]) -> list[str]:
    """Markdown table of ``v`` over (seed, *row_dims, ratio): one row per row label, one column per ratio."""
    mean, std = _stats(v)
    ratios = v["ratio"].values
    lines = ["| " + " | ".join(row_dims) + " | " + " | ".join(f"{r:g}" for r in ratios) + " |",
             "|" + "---|" * (len(row_dims) + len(ratios))]
    stacked = mean.stack(row=row_dims).transpose("row", "ratio")
    sstack = None if std is None else std.stack(row=row_dims).transpose("row", "ratio")
    for i, key in enumerate(stacked["row"].values):
        key = key if isinstance(key, tuple) else (key,)
        cells = [_cell(float(stacked.values[i, j]), None if sstack is None else float(sstack.values[i, j]))
                 for j in range(len(ratios))]
        lines.append("| " + " | ".join(map(str, key)) + " | " + " | ".join(cells) + " |")
    return lines + [""]


def _dense_line(d: xr.DataArray | None, dim: str | None = None) -> list[str]:
    """'Dense network: mean ± std' of ``d`` over seed (and per label of ``dim``), or nothing."""
    if d is None:
        return []
    labels = d[dim].values if dim else [None]
    parts = []
    for lbl in labels:
        m, s = _stats(d.sel({dim: lbl}) if dim else d)
        parts.append((f"{dim} {lbl}: " if dim and len(labels) > 1 else "") + _cell(float(m), None if s is None else float(s)))
    return ["Dense network: " + ", ".join(parts) + ".", ""]


def _finite(v: xr.DataArray) -> bool:
    return bool(np.isfinite(v.values).any())


def _quantity(ds: xr.Dataset, name: str, at: dict, where: str, fname: str) -> tuple[Callable | None, list[str]]:
    """The drawing function (None when there is nothing to draw) and the text of one quantity."""
    from .plots_diagnostics import Panel, plot_quantity_vs_ratio

    heading, ylabel = _TITLES[name]
    v = ds[name].sel(at)
    if not _finite(v):
        why = " (defined for ReLU networks only)" if "entropy" in name else ""
        return None, [f"### {heading}", "", f"`{name}`: no value for {where}{why}; no figure or table.", ""]
    dense = ds[f"dense_{name}"].sel(at) if f"dense_{name}" in ds else None
    mean_dense = None if dense is None else dense.mean("seed")
    if name == "hessian_eig":
        panels = [Panel("largest eigenvalue λ1", v.isel(eig=0), None if dense is None else float(mean_dense.isel(eig=0)))]
        if v.sizes["eig"] > 1:
            panels.append(Panel(f"mean of the top {v.sizes['eig']}", v.mean("eig"),
                                None if dense is None else float(mean_dense.mean())))
        table = _table(v.isel(eig=0), ("method",))
        table += _dense_line(None if dense is None else dense.isel(eig=0))
        title = f"{heading} λ1 (`{name}`, eig = 1)"
    else:
        dim = next(d for d in v.dims if d in _PANEL)
        panels = [Panel(_PANEL[dim](lbl), v.sel({dim: lbl}), None if dense is None else float(mean_dense.sel({dim: lbl})))
                  for lbl in v[dim].values]
        rows, title = ("method", dim), f"{heading} (`{name}`)"
        if name == "kfac_radius":  # the network's radius, the largest over its Linear layers: first, and the table's
            v, dense = v.max(dim), None if dense is None else dense.max(dim)
            panels.insert(0, Panel("network: the largest over Linear layers", v,
                                   None if dense is None else float(dense.mean("seed"))))
            rows, dim, title = ("method",), None, f"{heading} of the network, the largest over its Linear layers (`{name}`)"
        table = _table(v, rows) + _dense_line(dense, dim)

    def draw(path: Path) -> Path:
        return plot_quantity_vs_ratio(panels, path, ylabel=ylabel, title=f"{heading}: {where}")

    return draw, [f"### {title}", "", f"![{name}]({fname})", ""] + table


def _lines(ds: xr.Dataset, at: dict, where: str, fname: str) -> tuple[Callable, list[str]]:
    """The drawing function and the text (barrier table) of the loss lines."""
    from .plots_diagnostics import plot_loss_lines

    loss = "cross-entropy (nats)" if ds.attrs.get("task") == "classification" else "MSE"
    train, test = (ds[n].sel(at).transpose("seed", "pair", "ratio", "alpha") for n in _LINES)
    bars = xr.concat([barrier(train), barrier(test)], xr.Variable("loss", ["training", "test"]))

    def draw(path: Path) -> Path:
        return plot_loss_lines(train, test, path, title=f"Loss along the line a -> b: {where}", loss=loss)

    text = ["### Loss along the line between two variants' final networks (`line_train_loss`, `line_test_loss`)", "",
            f"Loss, {loss}, at θ(α) = (1 − α) θ_a + α θ_b, pair `a->b`. The table gives the barrier: the highest "
            "loss along the line minus the higher of its two ends (0: no barrier).", "", f"![loss lines]({fname})", ""]
    return draw, text + _table(bars, ("pair", "loss"))


def plan(ds: xr.Dataset, metric: str, metric_figure: Callable[[str], str], suffix: Callable[[str, float], str]) -> Plan:
    """The figures and text of every quantity present, per architecture and noise level.

    ``metric_figure(arch)`` is the file name of the report metric's figure, ``suffix(arch, level)``
    the part of a file name that tells the architecture and noise level apart ('' for one of each)."""
    out = Plan()
    quantities = [n for n in _TITLES if n in ds]
    lines = all(n in ds for n in _LINES)
    if not quantities and not lines:
        return out
    nseed = ds.sizes["seed"]
    final = "finetuned" if "finetuned" in ds["stage"].values else ds["stage"].values[-1]
    spread = f"mean ± sample standard deviation over {nseed} seeds" if nseed > 1 else "one seed (no spread)"
    for arch in ds["arch"].values:
        for level in ds["noise"].values:
            at = {"arch": arch, "noise": level}
            where, sfx = f"{arch}, noise {level:g}", suffix(str(arch), float(level))
            text = [f"## Diagnostics: {where}", "",
                    f"Final (fine-tuned) networks, {spread}; columns: the requested pruning ratio (each "
                    "network's achieved sparsity is the results' `sparsity` variable). Figures: line = mean "
                    "over seeds, band = smallest to largest seed, grey line = the dense network.", "",
                    f"### `{metric}`, {'fine-tuned' if final == 'finetuned' else final}", "", f"![{metric}]({metric_figure(str(arch))})", ""]
            text += _table(ds[metric].sel(at).sel(stage=final), ("method",))
            text += _dense_line(ds[f"dense_{metric}"].sel(at) if f"dense_{metric}" in ds else None)
            for name in quantities:
                fname = f"report_{name}_vs_ratio{sfx}.png"
                draw, part = _quantity(ds, name, at, where, fname)
                if draw is not None:
                    out.figures[fname] = draw
                text += part
            if lines:
                fname = f"report_loss_lines{sfx}.png"
                out.figures[fname], part = _lines(ds, at, where, fname)
                text += part
            out.text += text
    if "psp_norm" in ds and "psp_entropy" not in ds:
        out.text += ["PSP-entropy is not in the results: it is defined for ReLU networks only, and this "
                     "study's networks are not ReLU networks.", ""]
    return out
