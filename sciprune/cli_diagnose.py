"""``sciprune diagnose``: curvature, loss landscapes and PSP-entropy of saved models.

Each subcommand loads saved models (``sciprune train``/``prune``/``run`` write them), rebuilds the
data they were trained on from their provenance, calls one library function of
:mod:`sciprune.diagnostics`, and writes a NetCDF file and a figure into ``--out``.
"""

from __future__ import annotations

from pathlib import Path

import click

from ._cli_base import SEED, Group, PathArg, UserError
from ._cli_models import output_folder
from .errors import SciPruneError

__all__ = ["diagnose"]


@click.group(cls=Group)
def diagnose() -> None:
    """Why a solution generalises: Hessian spectrum, loss landscapes, PSP-entropy."""


def _other_data(sur, data_file: str, sample: int, dev):
    """Every grid point of one sample of a PDEBench file, in the units the model was trained in.

    The model's recorded scalings map the physical (x, t) and u, so the points are exactly what the
    network would have seen had it been trained on this file (no refitted scaling).
    """
    import numpy as np
    import torch

    from .data.coords import grid_inputs
    from .data.pdebench import open_pdebench

    if sur.task != "regression" or sur.input_scaling is None or sur.output_scaling is None:
        raise UserError(f"--data needs a regression surrogate u(x, t) with recorded scalings; {sur.task} model given")
    with open_pdebench(data_file) as f:
        field = f.sample(sample)
    X = sur.input_scaling.forward(grid_inputs(field))
    Y = sur.output_scaling.forward(np.asarray(field.values, dtype=np.float64).reshape(-1, 1))
    if X.shape[1] != sur.in_features:
        raise UserError(f"{data_file}: the model takes {sur.in_features} inputs, the file's grid gives {X.shape[1]}")
    p = next(sur.model.parameters())
    return torch.as_tensor(X, dtype=p.dtype, device=dev), torch.as_tensor(Y, dtype=p.dtype, device=dev)


def _subsample(X, Y, max_points: int | None, seed: int):
    """A seeded random subset of ``max_points`` rows (all rows when None or when there are fewer)."""
    import torch

    if max_points is None or max_points >= X.shape[0]:
        return X, Y
    idx = torch.randperm(X.shape[0], generator=torch.Generator().manual_seed(seed))[:max_points].to(X.device)
    return X[idx], Y[idx]


def _load(model_path: str, device: str, max_points: int | None, seed: int, data_file: str | None = None,
          sample: int = 0, *, rescale: bool = False):
    """The saved model, its training data (optionally a seeded subsample) and its test data, and the loss.

    The data are in the model's own stored scaling (see :func:`sciprune.cli._reload_task`). With
    ``data_file`` (a PDEBench HDF5 file), the data are all points of that file's ``sample`` instead,
    for both roles.
    """

    from ._cli_models import note as _note
    from ._cli_models import reload_task as _reload_task
    from .devices import resolve_device
    from .surrogate import load

    if max_points is not None and max_points < 1:
        raise UserError(f"--max-points must be a positive integer, got {max_points}")
    dev = resolve_device(device)
    sur = load(model_path, device=str(dev))
    if data_file is not None:
        X, Y = _subsample(*_other_data(sur, data_file, sample, dev), max_points, seed)
        return sur.model, (X, Y), None, "mse"
    loaded, _, problems = _reload_task(sur, dev, where=str(model_path), rescale=rescale)
    _note(problems)
    task = loaded.task
    X, Y = _subsample(task.X_train, task.Y_train, max_points, seed)
    model = sur.model
    p = next(model.parameters())
    X, Y = X.to(p.dtype), (Y.to(p.dtype) if Y.is_floating_point() else Y)
    Xt = task.X_test.to(p.dtype)
    Yt = task.Y_test.to(p.dtype) if task.Y_test.is_floating_point() else task.Y_test
    loss = "cross_entropy" if task.task == "classification" else "mse"
    return model, (X, Y), (Xt, Yt), loss


def _finite(value: float, name: str, lo: float, hi: float) -> float:
    """``value`` if finite and in the open interval (lo, hi), else a one-line user error."""
    import math

    if not (math.isfinite(value) and lo < value < hi):
        raise UserError(f"{name} must be a number in ({lo:g}, {hi:g}), got {value!r}")
    return value


def _write(ds, out: Path, name: str) -> Path:
    from .results import versions, write_dataset

    ds.attrs["versions"] = str(versions())
    return write_dataset(ds, out / name)


_common = [
    click.option("--out", "out", required=True, type=PathArg(file_okay=False), help="Folder of the results."),
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or mps."),
    click.option("--max-points", default=None, type=click.IntRange(min=1),
                 help="Use a seeded random subset of this many training points (default: all)."),
    click.option("--seed", default=0, show_default=True, type=SEED),
    click.option("--data", "data_file", default=None, type=PathArg(),
                 help="A PDEBench HDF5 file to analyse on instead of the model's own data (regression models)."),
    click.option("--sample", default=0, show_default=True, type=click.IntRange(min=0), help="Sample of --data."),
    click.option("--rescale-data", is_flag=True,
                 help="Proceed when the model's data no longer match what it records (file hash, scaling), "
                      "mapping them by the model's stored scaling."),
]


def _options(fn):
    for opt in reversed(_common):
        fn = opt(fn)
    return fn


@diagnose.command("hessian")
@click.argument("model_path", type=PathArg())
@click.option("--k", "k", default=5, show_default=True, type=click.IntRange(1, 10**4), help="Number of top eigenvalues.")
@click.option("--tol", default=1e-3, show_default=True, type=float, help="Relative tolerance of each eigenpair.")
@click.option("--layers", default=None, help="Comma-separated layers or parameters (default: all).")
@click.option("--trace-samples", default=0, show_default=True, type=click.IntRange(0, 10**6),
              help="Rademacher probes for a Hutchinson trace estimate (0: none).")
@_options
def hessian_cmd(model_path, k, tol, layers, trace_samples, out, device, max_points, seed, data_file, sample,
                rescale_data) -> None:
    """Top-k Hessian eigenvalues (Lanczos), trace and K-FAC spectral radius of the training loss."""
    from .diagnostics.plots import plot_eigenvalues
    from .diagnostics.spectrum import hessian_summary

    _finite(tol, "--tol", 0.0, 1.0)
    names = [n.strip() for n in layers.split(",") if n.strip()] if layers else None
    model, train, _, loss = _load(model_path, device, max_points, seed, data_file, sample, rescale=rescale_data)
    if names is not None:
        from .curvature import ParamSpace

        try:
            ParamSpace(model, names)  # the library's own check of the names, before anything is written
        except SciPruneError as err:
            raise UserError(f"--layers: {err}") from None
    with output_folder(out) as out:
        ds = hessian_summary(model, train, loss=loss, k=k, tol=tol, names=names, trace_samples=trace_samples, seed=seed)
        ds.attrs["model"] = str(model_path)
        path = _write(ds, out, "hessian.nc")
        plot_eigenvalues(ds["eigenvalue"].values, out / "hessian_eigenvalues.png", title=f"top-{k} Hessian eigenvalues")
        for i, (lam, res) in enumerate(zip(ds["eigenvalue"].values, ds["residual"].values), 1):
            click.echo(f"lambda_{i} = {lam:.6g}  (residual {res:.1e})")
        if "trace" in ds.attrs:
            click.echo(f"trace ~ {ds.attrs['trace']:.6g} +- {ds.attrs['trace_stderr']:.2g} ({trace_samples} probes)")
        if "kfac_spectral_radius" in ds.attrs:
            click.echo(f"K-FAC spectral radius {ds.attrs['kfac_spectral_radius']:.6g} (layer {ds.attrs['kfac_layer']})")
        click.echo(f"{ds.attrs['n_products']} Hessian-vector products; wrote {path}")


@diagnose.command("psp")
@click.argument("model_path", type=PathArg())
@click.option("--bins", default=10, show_default=True, type=click.IntRange(1, 10**6),
              help="For regression: classes are this many equal-count bins of the target.")
@click.option("--order", default=2, show_default=True, type=click.IntRange(1, 2),
              help="1: neuron entropies; 2: also the entropies of all neuron pairs.")
@_options
def psp_cmd(model_path, bins, order, out, device, max_points, seed, data_file, sample, rescale_data) -> None:
    """PSP norms and first/second-order PSP-entropy of every ReLU hidden layer (training data)."""
    import xarray as xr

    from .diagnostics import psp_entropy, psp_norms
    from .diagnostics.plots import plot_entropy_histograms

    model, train, _, _ = _load(model_path, device, max_points, seed, data_file, sample, rescale=rescale_data)
    with output_folder(out) as out:
        ent = psp_entropy(model, train, n_bins=bins, order=tuple(range(1, order + 1)))
        ds = xr.merge([psp_norms(model, train), ent], compat="override", combine_attrs="override")
        ds.attrs["model"] = str(model_path)
        path = _write(ds, out, "psp.nc")
        plot_entropy_histograms(ent, out / "psp_entropy.png")
        for i, layer in enumerate(ds["layer"].values):
            parts = [f"mean z^2 {float(ds['mean_psp_sq'][i]):.4g}"]
            for var, label in (("mean_entropy", "H"), ("mean_pair_entropy", "H2")):
                if var in ds:
                    parts.append(f"mean {label} {float(ds[var][i]):.4g} bits")
            click.echo(f"{layer}: " + ", ".join(parts))
        click.echo(f"wrote {path}")


def _pair(text: str, name: str, cast=float) -> tuple:
    try:
        a, b = (cast(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{name} must be two comma-separated numbers like 1,2, got {text!r}") from None
    return a, b


@diagnose.command("landscape")
@click.argument("model_a", type=PathArg())
@click.argument("model_b", type=PathArg())
@click.option("--points", default=21, show_default=True, type=click.IntRange(2, 10**6),
              help="Points on the line from A (0) to B (1).")
@click.option("--grid", default="21,21", show_default=True, help="Plane points (alpha,beta); 0,0 skips the plane.")
@click.option("--alpha-span", default="-0.5,1.5", show_default=True)
@click.option("--beta-span", default="-1,1", show_default=True)
@click.option("--filter-normalize", is_flag=True, help="Scale the random direction per neuron row (Li et al. 2018).")
@click.option("--psp", "with_psp", is_flag=True, help="Also PSP norm and PSP-entropies at every point (ReLU nets).")
@_options
def landscape_cmd(model_a, model_b, points, grid, alpha_span, beta_span, filter_normalize, with_psp, out, device,
                  max_points, seed, data_file, sample, rescale_data) -> None:
    """Train and test loss on the line between two solutions and on the plane through both.

    Both models are taken in the dense parameter space (a pruned one is its weights with zeros);
    the data are MODEL_A's (or --data, in MODEL_A's scaling). Every option is checked, and both
    results computed, before anything is written.
    """
    from .diagnostics import loss_line, loss_map
    from .diagnostics.landscape import plane_axes
    from .diagnostics.plots import plot_loss_line, plot_loss_map
    from .devices import resolve_device
    from .surrogate import load

    n = _pair(grid, "--grid", int)
    span = (_pair(alpha_span, "--alpha-span"), _pair(beta_span, "--beta-span"))
    if n != (0, 0):
        try:
            plane_axes(n, span)
        except SciPruneError as err:
            raise UserError(f"--grid/--alpha-span/--beta-span: {err}") from None
    a, train, test, loss = _load(model_a, device, max_points, seed, data_file, sample, rescale=rescale_data)
    b = load(model_b, device=resolve_device(device)).model
    b = b.to(next(a.parameters()).dtype)
    with output_folder(out) as out:
        labels = (Path(model_a).name, Path(model_b).name)
        line = loss_line(a, b, train, loss=loss, n_points=points, test_data=test, psp=with_psp)
        line.attrs.update(model_a=str(model_a), model_b=str(model_b))
        plane = None
        if n != (0, 0):
            plane = loss_map(a, b, train, loss=loss, n=n, span=span, seed=seed, filter_normalize=filter_normalize,
                             test_data=test, psp=with_psp)
            plane.attrs.update(model_a=str(model_a), model_b=str(model_b))
        paths = [_write(line, out, "line.nc")]
        plot_loss_line(line, out / "line.png", labels=labels)
        click.echo(f"line: train loss {float(line['train_loss'][0]):.4g} (A) -> max "
                   f"{float(line['train_loss'].max()):.4g} -> {float(line['train_loss'][-1]):.4g} (B)")
        if plane is not None:
            paths.append(_write(plane, out, "plane.nc"))
            plot_loss_map(plane, out / "plane.png", labels=labels)
        click.echo("wrote " + ", ".join(map(str, paths)))
