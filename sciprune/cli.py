"""The ``sciprune`` command line: one click group, thin subcommands over the library.

A user mistake (bad file, bad option, bad case file) prints one line ``Error: ...`` and exits with
code 2, without a traceback. Heavy imports happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ._cli_base import Group as _Group
from ._cli_base import SEED, PathArg, UserError
from ._cli_models import (data_hash, note, output_folder, prepare_model_out, reload_task, save_model, spec_of,
                          validated)


DEVICE_HELP = "cpu, cuda, cuda:N or mps."
RESCALE_HELP = ("Proceed when the model's data no longer match what it records (file hash, scaling): the "
                "data are mapped by the model's stored scaling, as sciprune.load(path)(x) would.")


def _ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"--widths must be comma-separated integers like 40,40,40, got {text!r}") from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sciprune")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="CPU threads torch may use (default: torch's choice). On a shared machine 1 is often fastest.")
def cli(threads) -> None:
    """Prune the fully-connected surrogates of physical simulations."""
    if threads:
        import torch

        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- generate
@cli.group(cls=_Group)
def generate() -> None:
    """Generate data sets."""


@generate.command("diffusion-sorption")
# A plain string: click.Path refuses a NUL byte with a ValueError (exit 1) and pre-empts the library's checks.
@click.option("--out", "out", required=True, type=str, help="HDF5 file to write (resumed if it exists).")
@click.option("--samples", default=1, show_default=True, type=int, help="Number of samples (seeds first-seed ...).")
@click.option("--nx", default=1024, show_default=True, type=int, help="Number of cells.")
@click.option("--nt", default=101, show_default=True, type=int, help="Number of output times in [0, 500].")
@click.option("--mode", default="accurate", show_default=True, type=click.Choice(["accurate", "pdebench"]))
@click.option("--workers", default=None, type=int, help="Parallel processes (default: up to 2).")
@click.option("--first-seed", default=0, show_default=True, type=int)
def generate_diffsorp(out, samples, nx, nt, mode, workers, first_seed) -> None:
    """The 1-D diffusion-sorption equation of PDEBench, in PDEBench's HDF5 layout."""
    from tqdm.auto import tqdm

    from .data.diffsorp import generate as gen

    bar = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:  # drawn at the first finished sample, after every check has passed
            bar = tqdm(total=total, initial=max(done - 1, 0), desc="diffusion-sorption", unit="sample")
        bar.n = done
        bar.refresh()

    try:
        path = gen(out, n_samples=samples, nx=nx, nt=nt, mode=mode, workers=workers, first_seed=first_seed,
                   progress=progress)
    finally:
        if bar is not None:
            bar.close()
    click.echo(f"wrote {path}")


# ----------------------------------------------------------------------------- data
@cli.group(cls=_Group)
def data() -> None:
    """Inspect and convert data files."""


@data.command("info")
@click.argument("path", type=PathArg())
def data_info(path) -> None:
    """Describe a PDEBench HDF5 file, a classification HDF5 file or an IDX file."""
    from .data.info import describe_file

    click.echo(describe_file(path))


@data.command("convert")
@click.argument("source", type=PathArg())
@click.argument("out", type=PathArg(dir_okay=False))
def data_convert(source, out) -> None:
    """Convert a directory of MNIST / Fashion-MNIST IDX files into one HDF5 file."""
    from .data.classification import convert_idx_to_h5

    if not Path(source).is_dir():
        raise UserError(f"{source}: expected a directory holding the IDX files (train-images-idx3-ubyte[.gz], ...)")
    click.echo(f"wrote {convert_idx_to_h5(source, out)}")


# ----------------------------------------------------------------------------- train / prune / evaluate
def _data_spec(data_arg: str, sample: int, split: str, generate_nx: int | None):
    from .config import DataSpec, GenerateSpec

    if data_arg == "digits" or Path(data_arg).is_dir() or _is_classification_h5(data_arg):
        return DataSpec(kind="classification", source=data_arg)
    gen = GenerateSpec(samples=sample + 1, nx=generate_nx) if generate_nx else None
    return DataSpec(kind="pdebench", file=data_arg, sample=sample, split=split, generate=gen)


def _is_classification_h5(path: str) -> bool:
    """True for an HDF5 file in one of the classification layouts (links are never followed out of it)."""
    if not Path(path).is_file():
        return False
    import h5py

    from .data._files import open_h5
    from .data.classification import classification_h5_splits

    if not h5py.is_hdf5(path):
        return False
    with open_h5(path) as f:
        return classification_h5_splits(f) is not None


@cli.command()
@click.option("--data", "data_arg", default="digits", show_default=True,
              help="PDEBench HDF5 file (regression u(x,t)), 'digits', an IDX directory or a classification HDF5 file.")
@click.option("--sample", default=0, show_default=True, type=int, help="Sample index in a PDEBench file.")
@click.option("--generate-nx", default=None, type=int, help="Generate a missing PDEBench file with this many cells.")
@click.option("--split", default="random", show_default=True, type=click.Choice(["random", "time"]))
@click.option("--noise", "noise_kind", default="uniform", show_default=True,
              type=click.Choice(["none", "uniform", "gaussian", "relative-gaussian"]))
@click.option("--noise-level", default=0.0, show_default=True, type=float)
@click.option("--model", "model_kind", default="mlp", show_default=True, type=click.Choice(["mlp", "lenet-300-100"]))
@click.option("--widths", default="40,40,40", show_default=True, help="Hidden layer widths.")
@click.option("--activation", default="tanh", show_default=True, type=click.Choice(["tanh", "relu", "gelu", "sin"]))
@click.option("--optimizer", default="adam", show_default=True, type=click.Choice(["adam", "adamw", "sgd", "lbfgs"]))
@click.option("--lr", default=1e-3, show_default=True, type=float)
@click.option("--epochs", default=1000, show_default=True, type=int)
@click.option("--batch-size", default=None, type=int, help="Mini-batch size (default: full batch).")
@click.option("--lr-schedule", "--schedule", "lr_schedule", default="constant", show_default=True,
              type=click.Choice(["constant", "cosine", "step", "plateau"]),
              help="Learning-rate schedule (--schedule is its old name).")
@click.option("--patience", default=None, type=int, help="Early stopping patience in epochs.")
@click.option("--seed", default=0, show_default=True, type=SEED)
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--out", "out", required=True, type=PathArg(), help="Directory of the saved model (.sciprune).")
def train(data_arg, sample, generate_nx, split, noise_kind, noise_level, model_kind, widths, activation, optimizer,
          lr, epochs, batch_size, lr_schedule, patience, seed, device, out) -> None:
    """Train a dense network and save it as a portable surrogate."""
    from .config import ModelSpec, NoiseSpec, TrainSpec
    from .devices import resolve_device
    from .study import evaluate, make_model, train_config
    from .tasks import build_task, ensure_data
    from .training import fit

    spec = validated(_data_spec, data_arg, sample, split, generate_nx,
                      _names={"file": "--data", "source": "--data", "generate": "--generate-nx"})
    mspec = validated(ModelSpec, kind=model_kind, widths=_ints(widths), activation=activation,
                       _names={"kind": "--model"})
    tspec = validated(TrainSpec, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size,
                       lr_schedule=lr_schedule, patience=patience)
    validated(NoiseSpec, kind=noise_kind, levels=[noise_level], _names={"kind": "--noise", "levels": "--noise-level"})
    dev = resolve_device(device)
    prepare_model_out(out)
    with output_folder(Path(out).parent):
        ensure_data(spec)
        loaded = build_task(spec, noise_kind=noise_kind, noise_level=noise_level, seed=seed).to(dev)
        task = loaded.task
        model = make_model(mspec, task.in_features, task.out_features, seed, device=dev, dtype=torch_float())
        hist = fit(model, task, train_config(tspec, seed), progress=_epoch_progress(epochs))
        prov = {"data": spec.model_dump(), "noise": {"kind": noise_kind if noise_level else "none", "level": noise_level},
                "seed": seed, "train": tspec.model_dump(), "model": mspec.model_dump()}
        save_model(model, out, task, dict(prov, **data_hash(spec)))
        click.echo(json.dumps({"final_train_loss": hist.final_train_loss, **evaluate(model, loaded)}, indent=1))
        click.echo(f"wrote {out}")


def torch_float():
    import torch

    return torch.float32


def _epoch_progress(epochs: int):
    from tqdm.auto import tqdm

    bar = tqdm(total=epochs, desc="training", unit="epoch", leave=False)

    def progress(epoch, total, train_loss, val_loss):
        bar.n = epoch
        bar.set_postfix(loss=f"{train_loss:.3g}", val=f"{val_loss:.3g}", refresh=False)
        bar.refresh()
        if epoch >= total:
            bar.close()

    return progress


@cli.command("prune")
@click.argument("model_path", type=PathArg())
@click.option("--method", required=True, help="Pruning criterion (see 'sciprune methods').")
@click.option("--ratio", required=True, type=float, help="Fraction of weights removed, in [0, 1).")
@click.option("--scope", default="global", show_default=True, type=click.Choice(["global", "layer"]))
@click.option("--compensate/--no-compensate", default=None,
              help="Shift biases by elimination-compensation for any method (--compensate) or for none, "
                   "not even ec (--no-compensate). Default: the method's own.")
@click.option("--finetune-epochs", default=0, show_default=True, type=int)
@click.option("--lr", default=1e-3, show_default=True, type=float, help="Fine-tuning learning rate.")
@click.option("--seed", default=None, type=SEED, help="Seed of the criterion (default: the model's).")
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--rescale-data", is_flag=True, help=RESCALE_HELP)
@click.option("--out", "out", required=True, type=PathArg(), help="Directory of the pruned model.")
def prune_cmd(model_path, method, ratio, scope, compensate, finetune_epochs, lr, seed, device, rescale_data, out) -> None:
    """Prune a saved model on the data it was trained on, optionally fine-tune, and save it.

    Metrics are those of the network as stored (its own input and output scaling)."""
    from .config import TrainSpec
    from .criteria import get
    from .devices import resolve_device
    from .study import evaluate, train_config
    from .pruning import prune
    from .selection import check_ratio
    from .surrogate import load
    from .training import fit

    check_ratio(ratio)
    get(method)
    tspec = validated(TrainSpec, epochs=finetune_epochs, lr=lr, _names={"epochs": "--finetune-epochs"})
    dev = resolve_device(device)
    sur = load(model_path, device=str(dev))
    prepare_model_out(out)
    with output_folder(Path(out).parent):
        loaded, prov, problems = reload_task(sur, dev, where=str(model_path), rescale=rescale_data)
        note(problems)
        model = sur.model
        seed = int(prov.get("seed", 0)) if seed is None else seed
        report = prune(model, method, ratio, loaded.task, scope=scope, seed=seed, compensate=compensate)
        metrics = {"pruned": evaluate(model, loaded)}
        if finetune_epochs:
            fit(model, loaded.task, train_config(tspec, seed), progress=_epoch_progress(finetune_epochs))
            metrics["finetuned"] = evaluate(model, loaded)
        history = list(prov.get("pruning", [])) + [{"method": method, "ratio": ratio, "scope": scope, "seed": seed,
                                                     "compensated": report.compensated,
                                                     "finetune_epochs": finetune_epochs, "source": str(model_path)}]
        prov = dict(prov, method=method, ratio=ratio, pruning=history, **data_hash(spec_of(prov)))
        save_model(model, out, loaded.task, prov)
        click.echo(json.dumps({"achieved_sparsity": report.achieved, "compensated": report.compensated, **metrics}, indent=1))
        click.echo(f"wrote {out}")


@cli.command()
@click.argument("model_path", type=PathArg())
@click.option("--device", default="cpu", show_default=True, help=DEVICE_HELP)
@click.option("--rescale-data", is_flag=True, help=RESCALE_HELP)
def evaluate(model_path, device, rescale_data) -> None:
    """Metrics of a saved model on the test split of the data it was trained on (JSON).

    The network is evaluated as a user calls it: with the input and output scaling stored in the model."""
    from .masks import sparsity
    from .study import evaluate as eval_model
    from .devices import resolve_device
    from .surrogate import load

    dev = resolve_device(device)
    sur = load(model_path, device=str(dev))
    loaded, _, problems = reload_task(sur, dev, where=str(model_path), rescale=rescale_data)
    note(problems)
    out = eval_model(sur.model, loaded)
    out["weight_sparsity"] = sparsity(sur.model)["weights"]["sparsity"]
    click.echo(json.dumps(out, indent=1))


# ----------------------------------------------------------------------------- run / methods
@cli.command()
@click.argument("case_file", type=PathArg())
@click.option("--output", default=None, help="Override the case's output directory.")
@click.option("--device", default=None, help="Override the case's device (cpu, cuda, cuda:1).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--wait", is_flag=True,
              help="If another process is using the output folder, wait for it to finish instead of exiting.")
def run(case_file, output, device, quiet, wait) -> None:
    """Run a study described by a TOML case file (see cases/)."""
    from .config import load_case
    from .pipeline import run_case

    overrides = {}
    if output:
        overrides["output"] = output
    if device:
        overrides["device"] = device
    case = load_case(case_file, overrides)
    path = run_case(case, case_path=case_file, echo=click.echo, show_progress=not quiet, wait=wait)
    click.echo(f"wrote {path} and figures in {path.parent}")


@cli.command("report")
@click.argument("results", type=PathArg())
@click.option("--out", "out", default=None, type=PathArg(file_okay=False),
              help="Folder of the figures and report.md (default: beside RESULTS).")
@click.option("--metric", default=None, help="Metric to rank by (default: test_mse_clean, or test_loss).")
@click.option("--tolerance", default=0.1, show_default=True, type=float,
              help="How far can I prune: the largest ratio whose mean error is within (1 + TOLERANCE) x the "
                   "dense network's, per method and noise level (> 0).")
def report_cmd(results, out, metric, tolerance) -> None:
    """Draw a study's results.nc: error against ratio per method and noise level, and a ranking.

    Also which method to use per noise level and ratio (best mean, margin, and whether it holds over
    seeds: paired 95% bootstrap interval, sign test), how far each method prunes within --tolerance of
    the dense error (recommendation.csv, tolerance.csv), and with two noise levels or more the error
    against the noise level per ratio (robustness_*.png; docs/studies.md).

    A study run with [diagnostics] also gets, per architecture and noise level, a figure and a table
    (mean ± std over seeds) of the top Hessian eigenvalue, the PSP norm and PSP-entropies per layer
    against the ratio, and of the loss along each line (docs/diagnostics.md)."""
    from .report import report

    path = report(results, out, metric=metric, tolerance=tolerance)
    click.echo(f"wrote {path}")


@cli.command()
def methods() -> None:
    """List the pruning methods (a neuron method's ratio is a fraction of hidden neurons)."""
    from .criteria import available, get

    for name in available():
        c = get(name)
        extra = ("" if c.needs_data else " (no data needed)") + (" [removes whole neurons]" if c.granularity == "neuron" else "")
        extra += "" if c.in_all or c.granularity == "neuron" else " [not in methods = ['all']]"
        click.echo(f"{name:16s} {c.summary}{extra}")


def _register() -> None:
    from .cli_diagnose import diagnose
    from .cli_export import export
    from .cli_sweep import sweep

    cli.add_command(diagnose)
    cli.add_command(export)
    cli.add_command(sweep)


_register()


def main() -> None:
    cli(prog_name="sciprune")


if __name__ == "__main__":
    main()
