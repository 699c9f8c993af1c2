"""Run a case: the single orchestration entry behind ``sciprune run``.

For each noise level and seed: build the task, train the dense network, then prune copies for every
method and ratio under the case's schedule, evaluating them just pruned ("pruned") and after the
fine-tuning ("finetuned"), through the study procedure :func:`sciprune.engine.prune_and_train` that
``sciprune sweep`` shares (the study pieces both use are in :mod:`sciprune.study`). Everything goes into one labelled xarray Dataset with the resolved case and
versions in its attributes, written atomically, plus figures and portable surrogates.

The output folder is checked first (:func:`sciprune.outputs.prepare_output`) and held by one process
(:mod:`sciprune.study_lock`); finished blocks are keyed on the case's settings and on the content hash
of its data (:mod:`sciprune.fingerprint`), so a data file replaced in place is never answered with old
numbers; every file written with a name from the case stays under the output folder
(:func:`sciprune.outputs.child`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

from .config import Case
from .devices import resolve_device
from .engine import prune_and_train, sequential_trainer
from .fingerprint import Fingerprint, check_unchanged
from .outputs import child
from .planner import Planner
from .results import write_dataset
from .study import (  # noqa: F401  (re-exported: the study pieces ``sciprune run`` is made of)
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    case_hash,
    check_case,
    check_training_lengths,
    evaluate,
    held_study,
    load_task,
    make_model,
    predict_field,
    rewind_hooks,
    scratch_spec,
    study_attrs,
    study_diagnostics,
    study_lines,
    study_variants,
    train_config,
    weight_count,
)
from .study_records import STAGES, diagnostic_variables, line_variables, prune_variables
from .training import fit

__all__ = ["run_case", "save_surrogate"]


def run_case(
    case: Case,
    *,
    case_path: str | None = None,
    echo: Callable[[str], None] = print,
    show_progress: bool = True,
    wait: bool = False,
) -> Path:
    """Run ``case`` and write ``<output>/results.nc``, figures and surrogates; return the results path.

    The study is cut into blocks, one per (architecture, noise level, seed); each finished block is
    written atomically to ``<output>/blocks/`` with the case hash and the data's content hash, and is
    skipped when the run is started again with the same case and the same data, so an interrupted
    study resumes without redoing finished blocks. A block made by other settings, from other data,
    or damaged is recomputed, and the output says which and why. The output folder is held with
    :func:`sciprune.study_lock.open_study` (``wait``: wait for another process holding it instead of
    refusing).
    """
    device = resolve_device(case.device)
    check_case(case)  # the data file exists or can be made, before the output folder is touched
    dtype = getattr(torch, case.dtype)
    with held_study(case, command="run", wait=wait, echo=echo) as (out, data):
        return _run_blocks(case, case_path, out, data, device=device, dtype=dtype, echo=echo, show_progress=show_progress)


def _run_blocks(case: Case, case_path: str | None, out: Path, data: Fingerprint, *, device, dtype, echo,
                show_progress: bool) -> Path:
    """The blocks of ``case`` (stored ones reused), then results.nc and the figures."""
    from tqdm.auto import tqdm

    levels = case.noise.levels if case.data.kind == "pdebench" else [0.0]
    archs, seeds, ratios = case.models, case.seeds, case.prune.ratios
    per_block = 1 + len(case.prune.variants) * len(ratios) + (len(ratios) if case.baseline.scratch else 0)
    blocks = [(a, lvl, s) for a in archs for lvl in levels for s in seeds]
    digest = case_hash(case)
    parts: dict[tuple, xr.Dataset] = {}
    stale: dict[str, list[str]] = {}
    paths = {b: child(out, "blocks", f"{b[0]}__noise{b[1]:g}__seed{b[2]}.nc") for b in blocks}
    for arch, level, seed in blocks:
        path = paths[(arch, level, seed)]
        done, why = _stored_block(path, case, (arch, level, seed), digest, data, echo)
        if done is not None:
            parts[(arch, level, seed)] = done
        elif why is not None:
            stale.setdefault(why, []).append(path.name)
    for why, names in stale.items():
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        echo(f"recomputing {len(names)} block(s) ({shown}): {why}")
    bar = tqdm(total=len(blocks) * per_block, initial=len(parts) * per_block, desc=case.name, unit="run",
               disable=not show_progress, dynamic_ncols=True)
    t0 = time.perf_counter()
    for arch, level, seed in blocks:
        if (arch, level, seed) in parts:
            continue
        snapshot = case.data.kind == "pdebench" and seed == seeds[0] and level == levels[-1]
        ds = _run_block(case, arch, level, seed, device=device, dtype=dtype, bar=bar, out=out, snapshot=snapshot,
                        data=data)
        ds.attrs["case_hash"] = digest
        ds.attrs["data_sha256"] = data.sha256
        write_dataset(ds, paths[(arch, level, seed)])
        parts[(arch, level, seed)] = ds
    bar.close()
    check_unchanged(data)

    ordered = [parts[b] for b in blocks]
    field_parts = {p["arch"].item(): p for p in ordered if "field" in p}
    # outer join: NaN where blocks differ in size (schedule steps, hidden layers of another architecture)
    ds = xr.combine_by_coords([p.drop_vars(["field", "panel", "x", "t"], errors="ignore") for p in ordered],
                              combine_attrs="drop", join="outer", compat="no_conflicts")
    ds.attrs.update(study_attrs(case, case_path, wall_time_s=time.perf_counter() - t0, device=device, data=data))
    path = write_dataset(ds, out / "results.nc")
    _figures(case, ds, field_parts, out)
    return path


def _stored_block(path: Path, case: Case, where: tuple, digest: str, data: Fingerprint,
                  echo: Callable[[str], None]) -> tuple[xr.Dataset | None, str | None]:
    """(the stored block, None) when ``path`` holds this block of this case and data; else (None, why
    it is recomputed) or (None, None) when there is none. A damaged file is reported at once."""
    from .results import read_dataset

    if not path.exists():
        return None, None
    try:
        done = read_dataset(path)
    except Exception as err:  # any unreadable file is recomputed, never trusted
        echo(f"{path}: damaged (not a readable NetCDF file: {type(err).__name__}); recomputing")
        return None, None
    stored_case, stored_data = done.attrs.get("case_hash"), done.attrs.get("data_sha256")
    if stored_case != digest:
        return None, "they were made by a different case (other settings)"
    if stored_data != data.sha256:
        if not isinstance(stored_data, str):
            return None, "they were made without a data hash (by an older sciprune)"
        return None, f"data {data.label} changed (sha256 {stored_data[:12]}.. -> {data.short()}..)"
    problem = _block_problem(done, case, where)
    if problem is not None:
        echo(f"{path}: damaged ({problem}); recomputing")
        return None, None
    return done, None


def _block_problem(ds: xr.Dataset, case: Case, where: tuple) -> str | None:
    """Why ``ds`` is not a block of ``case`` at ``where`` = (arch, noise, seed), or None."""
    arch, level, seed = where
    metrics = REGRESSION_METRICS if case.data.kind == "pdebench" else CLASSIFICATION_METRICS
    lead = ("arch", "noise", "seed")
    want = {m: lead + ("method", "ratio", "stage") for m in metrics}
    want["sparsity"] = lead + ("method", "ratio")
    want.update({f"dense_{m}": lead for m in (*metrics, "weights")})
    if case.baseline.scratch:
        want.update({f"scratch_{m}": lead + ("ratio",) for m in (*metrics, "weights")})
    if case.diagnostics.hessian_top:
        want.update({"hessian_eig": lead + ("method", "ratio", "eig"), "dense_hessian_eig": lead + ("eig",)})
    if case.diagnostics.psp:
        want.update({"psp_norm": lead + ("method", "ratio", "layer"), "dense_psp_norm": lead + ("layer",)})
    if case.diagnostics.kfac:
        want.update({"kfac_radius": lead + ("method", "ratio", "linear"), "dense_kfac_radius": lead + ("linear",)})
    if case.diagnostics.inference:
        want.update({"inference_us": lead + ("method", "ratio", "batch"), "dense_inference_us": lead + ("batch",)})
    if case.diagnostics.lines:
        want.update({f"line_{k}_loss": lead + ("pair", "ratio", "alpha") for k in ("train", "test")})
    if case.prune.keep_steps != "last":
        want.update({f"step_{m}": lead + ("method", "ratio", "step", "stage") for m in metrics})
        want["step_sparsity"] = lead + ("method", "ratio", "step")
        want["step_train_loss"] = lead + ("method", "ratio", "step", "epoch")
    coords = {"arch": [arch], "noise": [level], "seed": [seed], "method": [v[0] for v in case.prune.variants],
              "ratio": list(case.prune.ratios), "stage": list(STAGES)}
    for name, values in coords.items():
        if name not in ds.coords or [_plain(v) for v in ds[name].values] != [_plain(v) for v in values]:
            return f"coordinate {name!r} is not {values}"
    for name, dims in want.items():
        if name not in ds.data_vars:
            return f"variable {name!r} is missing"
        if ds[name].dims != dims or not np.issubdtype(ds[name].dtype, np.number):
            return f"variable {name!r} has dims {ds[name].dims} and dtype {ds[name].dtype}, expected numbers over {dims}"
    return None


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _figures(case: Case, ds: xr.Dataset, field_parts: dict, out: Path) -> None:
    from .plots import plot_fields, plot_loss_vs_ratio

    metrics = ["test_mse", "test_mse_clean"] if case.data.kind == "pdebench" else ["test_accuracy", "test_loss"]
    single = len(ds["arch"]) == 1
    for arch in ds["arch"].values:
        suffix = "" if single else f"_{arch}"
        sub = ds.sel({"arch": arch})
        for metric in metrics:
            plot_loss_vs_ratio(sub, child(out, f"{metric}_vs_ratio{suffix}.png"), metric=metric,
                               title=None if single else f"architecture {arch}")
        part = field_parts.get(arch)
        if part is not None:
            f = part["field"]
            fields = {str(name): f.sel({"panel": name}).values for name in f["panel"].values}
            plot_fields(fields, f["x"].values, f["t"].values, child(out, f"fields{suffix}.png"),
                        title=f"{arch}: noise {case.noise.kind} {part['noise'].item():g}, seed {part['seed'].item()}")


def _run_block(case: Case, arch: str, level: float, seed: int, *, device, dtype, bar, out: Path, snapshot: bool,
               data: Fingerprint) -> xr.Dataset:
    """One architecture, noise level and seed: dense training, every method x ratio, baselines."""
    spec = case.models[arch]
    variants, ratios = case.prune.variants, case.prune.ratios
    labels = [v[0] for v in variants]
    metrics = REGRESSION_METRICS if case.data.kind == "pdebench" else CLASSIFICATION_METRICS
    where = f"{arch} noise={level:g} seed={seed}"

    loaded = load_task(case, level, seed, device=device, dtype=dtype)
    task = loaded.task
    finetune = train_config(case.finetune, seed)
    check_training_lengths(case, int(task.X_train.shape[0]))  # before any training
    dense = make_model(spec, task.in_features, task.out_features, seed, device=device, dtype=dtype)
    rewinds = rewind_hooks(case)  # the dense weights at each step a procedure rewinds to
    fit(dense, task, train_config(case.train, seed), progress=_epochs(bar, f"{where} dense"),
        hooks=list(rewinds.values()) or None)
    dense_diagnostics = study_diagnostics(case, dense, task, seed)
    provenance = dict(_provenance(case, level, seed), architecture=arch, data_sha256=data.sha256)
    tag = f"{arch}_noise{level:g}_seed{seed}"
    if case.save_models and seed == case.seeds[0]:
        save_surrogate(dense, child(out, "models", f"dense_{tag}.sciprune"), task, provenance)
    bar.update(1)

    snap_ratio = case.prune.snapshot_ratio if case.prune.snapshot_ratio is not None else ratios[-1]
    fields = {}
    if snapshot:
        fields = {"clean data": loaded.clean_field, "noisy data": loaded.noisy_field, "dense": predict_field(dense, loaded)}
    planner = Planner(dense, task, seed=seed, options=case.prune.options)  # one scoring per method
    bar.set_postfix_str(f"{where} pruning")
    trainer = sequential_trainer(task, progress=lambda name: _epochs(bar, f"{where} {name}"), done=lambda: bar.update(1))
    outcomes = prune_and_train(planner, study_variants(case), schedule=case.prune.schedule, scope=case.prune.scope,
                               finetune=finetune, train=trainer, evaluate=lambda m: evaluate(m, loaded),
                               keep=case.prune.keep_steps, train_config=train_config(case.train, seed),
                               init=lambda: make_model(spec, task.in_features, task.out_features, seed, device=device,
                                                       dtype=dtype),
                               snapshots={k: h.at(0) for k, h in rewinds.items()})
    for o in outcomes:
        v = o.variant
        if snapshot and v.ratio == snap_ratio:
            fields[f"{v.label} r={v.ratio:g} fine-tuned"] = predict_field(o.model, loaded)
        if case.save_models and seed == case.seeds[0] and v.ratio == ratios[-1]:
            prov = dict(provenance, method=v.method, ratio=v.ratio, scope=case.prune.scope, compensate=v.compensate,
                        schedule=case.prune.schedule, **({"neurons": o.provenance} if o.provenance else {}))
            save_surrogate(o.model, child(out, "models", f"{v.label}_r{v.ratio:g}_{tag}.sciprune"), task, prov)

    coords = {"arch": [arch], "noise": [level], "seed": [seed], "method": labels, "ratio": ratios, "stage": list(STAGES)}
    lead = ("arch", "noise", "seed")
    records = [((0, 0, 0), o.variant.label, o.variant.ratio,
                dict(o.record(case.prune.keep_steps), diagnostics=study_diagnostics(case, o.model, task, seed)))
               for o in outcomes]
    data, step_coords = prune_variables(metrics, lead, (1, 1, 1), labels, ratios, records,
                                        keeps_steps=case.prune.keep_steps != "last")
    coords.update(step_coords)
    diag, diag_coords = diagnostic_variables(lead, (1, 1, 1), labels, ratios, records,
                                             [((0, 0, 0), {"diagnostics": dense_diagnostics})])
    data.update(diag)
    coords.update(diag_coords)
    lines = study_lines(case, outcomes, task)
    line_data, line_coords = line_variables(lead, (1, 1, 1), case.diagnostics.pairs, ratios, case.diagnostics.line_points,
                                            [((0, 0, 0), a, b, r, line) for (a, b, r), line in lines.items()])
    data.update(line_data)
    coords.update(line_coords)
    for m, v in evaluate(dense, loaded).items():
        data[f"dense_{m}"] = (lead, np.full((1, 1, 1), v))
    data["dense_weights"] = (lead, np.full((1, 1, 1), weight_count(dense)))
    if case.baseline.scratch:
        data.update(_scratch(case, dense, task, loaded, ratios, seed, device, dtype, bar, where, lead))
    ds = xr.Dataset(data, coords=coords)
    if fields:
        ds["field"] = xr.DataArray(np.stack(list(fields.values())), dims=("panel", "t", "x"),
                                   coords={"panel": list(fields), "t": loaded.t, "x": loaded.x})
    return ds


def _scratch(case, dense, task, loaded, ratios, seed, device, dtype, bar, where, lead) -> dict:
    """Dense networks with as many weights as each pruned one keeps, trained from scratch."""
    metrics = REGRESSION_METRICS if case.data.kind == "pdebench" else CLASSIFICATION_METRICS
    out = {m: np.full(len(ratios), np.nan) for m in metrics}
    weights = np.zeros(len(ratios))
    for r, ratio in enumerate(ratios):
        bar.set_postfix_str(f"{where} scratch r={ratio:g}")
        small_spec, weights[r] = scratch_spec(dense, task.in_features, task.out_features, ratio)
        model = make_model(small_spec, task.in_features, task.out_features, seed, device=device, dtype=dtype)
        fit(model, task, train_config(case.train, seed), progress=_epochs(bar, f"{where} scratch r={ratio:g}"))
        for m, v in evaluate(model, loaded).items():
            out[m][r] = v
        bar.update(1)
    data = {f"scratch_{m}": (lead + ("ratio",), v[None, None, None]) for m, v in out.items()}
    data["scratch_weights"] = (lead + ("ratio",), weights[None, None, None])
    return data


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


def save_surrogate(model, path: Path, task, provenance: dict) -> None:
    """Save ``model`` as a portable surrogate with the task's scaling, names and ``provenance``."""
    from .surrogate import save

    names_in = ["x", "t"] if task.task == "regression" else None
    save(model, path, input_scaling=task.input_scaling, output_scaling=task.output_scaling, task=task.task,
         provenance=provenance, input_names=names_in, output_names=["u"] if task.task == "regression" else None)
