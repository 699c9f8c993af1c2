"""Run a case: the single orchestration entry behind ``sciprune run``.

For each noise level and seed: build the task, train the dense network, then for every method and
ratio prune a copy one-shot, evaluate ("pruned"), fine-tune with the mask held, evaluate again
("finetuned"). Everything goes into one labelled xarray Dataset with the resolved case and
versions in its attributes, written atomically, plus figures and portable surrogates.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

from .config import Case, ModelSpec, TrainSpec
from .errors import SciPruneError
from .models import MLP, lenet_300_100
from .pruning import prune
from .results import versions, write_dataset
from .tasks import LoadedTask, build_task, ensure_data
from .training import TrainConfig, fit

__all__ = ["run_case", "train_config", "make_model", "evaluate", "resolve_device", "REGRESSION_METRICS", "CLASSIFICATION_METRICS"]

REGRESSION_METRICS = ("test_mse", "test_mse_clean", "test_rel_l2_clean", "field_nrmse", "train_mse")
CLASSIFICATION_METRICS = ("test_loss", "test_accuracy", "train_loss")
STAGES = ("pruned", "finetuned")


def resolve_device(name: str) -> torch.device:
    """``cpu`` or ``cuda[:N]``; a clear error when CUDA is asked for but absent."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SciPruneError(f"device {name!r} requested but no CUDA device is available; use device = 'cpu'")
    return torch.device(name)


def train_config(spec: TrainSpec, seed: int) -> TrainConfig:
    return TrainConfig(**spec.model_dump(), seed=seed)


def make_model(spec: ModelSpec, in_features: int, out_features: int, seed: int, *, device, dtype) -> MLP:
    """The network of ``spec`` for a task's input and output sizes, initialised from ``seed``."""
    if spec.kind == "lenet-300-100":
        model = lenet_300_100(in_features, out_features, seed=seed)
    else:
        model = MLP(in_features, spec.widths, out_features, spec.activation, seed=seed)
    return model.to(device=device, dtype=dtype)


@torch.no_grad()
def _predict(model, X: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    model.eval()
    return torch.cat([model(X[s : s + chunk]) for s in range(0, X.shape[0], chunk)])


@torch.no_grad()
def predict_field(model, loaded: LoadedTask) -> np.ndarray:
    """u(x, t) of ``model`` on the whole grid in physical units, shape (Nt, Nx)."""
    t = loaded.task
    p = next(model.parameters())
    Xg = torch.as_tensor(t.input_scaling.forward(loaded.grid_inputs), dtype=p.dtype, device=p.device)
    out = t.output_scaling.inverse(_predict(model, Xg).double().cpu().numpy())
    return out.reshape(loaded.clean_field.shape)


@torch.no_grad()
def evaluate(model, loaded: LoadedTask) -> dict[str, float]:
    """Test and training metrics; regression errors are in physical units."""
    import torch.nn.functional as F

    t = loaded.task
    if t.task == "classification":
        logits = _predict(model, t.X_test)
        return {
            "test_loss": float(F.cross_entropy(logits, t.Y_test)),
            "test_accuracy": float((logits.argmax(1) == t.Y_test).double().mean()),
            "train_loss": float(F.cross_entropy(_predict(model, t.X_train), t.Y_train)),
        }
    inv = t.output_scaling.inverse
    pred = inv(_predict(model, t.X_test).double())
    noisy, clean = inv(t.Y_test.double()), inv(t.Y_test_clean.double())
    train_pred = inv(_predict(model, t.X_train).double())
    from .metrics import nrmse_field

    return {
        "test_mse": float(((pred - noisy) ** 2).mean()),
        "test_mse_clean": float(((pred - clean) ** 2).mean()),
        "test_rel_l2_clean": float(torch.linalg.vector_norm(pred - clean) / torch.linalg.vector_norm(clean)),
        "field_nrmse": nrmse_field(predict_field(model, loaded), loaded.clean_field),
        "train_mse": float(((train_pred - inv(t.Y_train.double())) ** 2).mean()),
    }


def _empty(shape, dims, coords) -> xr.DataArray:
    return xr.DataArray(np.full(shape, np.nan), dims=dims, coords={d: coords[d] for d in dims})


def run_case(
    case: Case,
    *,
    case_path: str | None = None,
    echo: Callable[[str], None] = print,
    show_progress: bool = True,
) -> Path:
    """Run ``case`` and write ``<output>/results.nc``, figures and surrogates; return the results path."""
    from tqdm.auto import tqdm

    from .plots import plot_fields, plot_loss_vs_ratio

    device = resolve_device(case.device)
    dtype = getattr(torch, case.dtype)
    out = Path(case.output)
    out.mkdir(parents=True, exist_ok=True)
    if ensure_data(case.data):
        echo(f"generated {case.data.file}")

    levels = case.noise.levels if case.data.kind == "pdebench" else [0.0]
    methods, ratios, seeds = case.prune.methods, case.prune.ratios, case.seeds
    metrics = REGRESSION_METRICS if case.data.kind == "pdebench" else CLASSIFICATION_METRICS
    coords = {"noise": levels, "seed": seeds, "method": methods, "ratio": ratios, "stage": list(STAGES)}
    dims = ("noise", "seed", "method", "ratio", "stage")
    shape = tuple(len(coords[d]) for d in dims)
    data = {m: _empty(shape, dims, coords) for m in metrics}
    data["sparsity"] = _empty(shape, dims, coords)
    for m in metrics:
        data[f"dense_{m}"] = _empty(shape[:2], dims[:2], coords)
    fields: dict[str, np.ndarray] = {}
    field_meta = None

    total = len(levels) * len(seeds) * (1 + len(methods) * len(ratios))
    bar = tqdm(total=total, desc=case.name, unit="run", disable=not show_progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    for i, level in enumerate(levels):
        for j, seed in enumerate(seeds):
            loaded = build_task(case.data, noise_kind=case.noise.kind, noise_level=level, seed=seed, dtype=dtype)
            task = loaded.task.to(device, dtype)
            loaded = LoadedTask(task, loaded.grid_inputs, loaded.clean_field, loaded.noisy_field, loaded.x, loaded.t)
            bar.set_postfix_str(f"noise={level:g} seed={seed} dense")
            dense = make_model(case.model, task.in_features, task.out_features, seed, device=device, dtype=dtype)
            fit(dense, task, train_config(case.train, seed), progress=_epochs(bar, f"noise={level:g} seed={seed} dense"))
            for m, v in evaluate(dense, loaded).items():
                data[f"dense_{m}"][i, j] = v
            provenance = _provenance(case, level, seed)
            snapshot = case.data.kind == "pdebench" and j == 0 and i == len(levels) - 1
            if snapshot:
                fields = {"clean data": loaded.clean_field, "noisy data": loaded.noisy_field, "dense": predict_field(dense, loaded)}
                field_meta = (loaded.x, loaded.t, level, seed)
            if case.save_models and j == 0:
                _save(dense, out / "models" / f"dense_noise{level:g}_seed{seed}.sciprune", task, provenance)
            bar.update(1)
            for k, method in enumerate(methods):
                for r, ratio in enumerate(ratios):
                    bar.set_postfix_str(f"noise={level:g} seed={seed} {method} r={ratio:g}")
                    model = copy.deepcopy(dense)
                    report = prune(model, method, ratio, task, scope=case.prune.scope, seed=seed,
                                   **case.prune.options.get(method, {}))
                    for m, v in evaluate(model, loaded).items():
                        data[m][i, j, k, r, 0] = v
                    fit(model, task, train_config(case.finetune, seed),
                        progress=_epochs(bar, f"noise={level:g} seed={seed} {method} r={ratio:g} fine-tune"))
                    for m, v in evaluate(model, loaded).items():
                        data[m][i, j, k, r, 1] = v
                    data["sparsity"][i, j, k, r, :] = report.achieved
                    if r == len(ratios) - 1:
                        if snapshot:
                            fields[f"{method} r={ratio:g} fine-tuned"] = predict_field(model, loaded)
                        if case.save_models and j == 0:
                            prov = dict(provenance, method=method, ratio=ratio, scope=case.prune.scope)
                            _save(model, out / "models" / f"{method}_r{ratio:g}_noise{level:g}_seed{seed}.sciprune", task, prov)
                    bar.update(1)
    bar.close()

    ds = xr.Dataset(data)
    ds.attrs.update(
        case=json.loads(case.model_dump_json()), case_file=str(case_path) if case_path else "",
        task="regression" if case.data.kind == "pdebench" else "classification",
        units="errors in the physical units of u" if case.data.kind == "pdebench" else "cross-entropy (nats), accuracy (fraction)",
        versions=versions(),
        wall_time_s=round(time.perf_counter() - t0, 3), device=str(device),
    )
    if case.data.kind == "pdebench" and Path(case.data.file).exists():
        from .results import file_sha256

        ds.attrs["data_sha256"] = file_sha256(case.data.file)
    path = write_dataset(ds, out / "results.nc")
    main_metric = "test_mse" if case.data.kind == "pdebench" else "test_accuracy"
    plot_loss_vs_ratio(ds, out / f"{main_metric}_vs_ratio.png", metric=main_metric)
    if case.data.kind == "pdebench":
        plot_loss_vs_ratio(ds, out / "test_mse_clean_vs_ratio.png", metric="test_mse_clean")
        if fields:
            x, t, level, seed = field_meta
            plot_fields(fields, x, t, out / "fields.png", title=f"noise {case.noise.kind} {level:g}, seed {seed}")
    return path


def _epochs(bar, label: str):
    """A ``fit`` progress callback that shows the epoch and losses in the run bar's postfix."""

    def progress(epoch: int, total: int, train_loss: float, val_loss: float) -> None:
        bar.set_postfix_str(f"{label} epoch {epoch}/{total} loss {train_loss:.3g} val {val_loss:.3g}")

    return progress


def _provenance(case: Case, level: float, seed: int) -> dict:
    return {
        "case": case.name,
        "data": case.data.model_dump(),
        "noise": {"kind": case.noise.kind if level else "none", "level": level},
        "seed": seed,
        "train": case.train.model_dump(),
    }


def _save(model, path: Path, task, provenance: dict) -> None:
    from .surrogate import save

    names_in = ["x", "t"] if task.task == "regression" else None
    save(model, path, input_scaling=task.input_scaling, output_scaling=task.output_scaling, task=task.task,
         provenance=provenance, input_names=names_in, output_names=["u"] if task.task == "regression" else None)
