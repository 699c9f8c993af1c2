"""What the model commands share (train, prune, evaluate, diagnose): option validation through the
config specs, output folders that vanish again on failure, and the data a saved model was trained on,
rebuilt in the model's OWN stored scaling so that every metric is of the network as a user calls it."""

from __future__ import annotations

from pathlib import Path

import click

from ._cli_base import UserError

__all__ = ["validated", "save_model", "prepare_model_out", "output_folder", "data_hash", "reload_task",
           "in_model_units", "spec_of", "note"]


def validated(fn, *args, _names: dict[str, str] | None = None, _origin: str | None = None, **kwargs):
    """Build a config object, turning pydantic errors into one-line user errors.

    Each bad field is named as the command-line option it came from (``epochs`` -> ``--epochs``, or
    ``_names[field]``), or under ``_origin`` (e.g. the model whose provenance is read).
    """
    import re

    from pydantic import ValidationError

    try:
        return fn(*args, **kwargs)
    except ValidationError as err:
        from .config import _format_error

        line = _format_error("option", err)
        if _origin is not None:
            raise UserError(line.replace("option: ", f"{_origin}.")) from None

        def name(m: re.Match) -> str:
            field = m.group(1)
            return (_names or {}).get(field, "--" + field.replace("_", "-")) + (m.group(2) or "") + ":"

        raise UserError(re.sub(r"option: ([A-Za-z_]+)((?:\.[\w]+)*):", name, line)) from None


def save_model(model, out, task, provenance) -> None:
    from .pipeline import save_surrogate

    save_surrogate(model, Path(out), task, provenance)


def prepare_model_out(out: str) -> None:
    """Check, before any work, that a surrogate can be saved at ``out`` (an existing one is replaced)."""
    from ._surrogate_files import _as_path, _check_replaceable

    _check_replaceable(_as_path(out, "--out"))


def output_folder(folder: Path, what: str = "--out"):
    """The output folder of a model command, removed again if the command fails
    (:func:`sciprune.outputs.output_or_nothing`)."""
    from .outputs import output_or_nothing

    return output_or_nothing(folder, is_dir=True, what=what)


_HASHES = None  # the process's in-memory HashCache: a command that checks and records a hash reads the file once


def data_hash(spec) -> dict:
    """``{"data_sha256": ...}``: the content hash of the data ``spec`` reads, recorded with every model."""
    global _HASHES
    from .fingerprint import HashCache, data_fingerprint

    if _HASHES is None:
        _HASHES = HashCache(None)
    return {"data_sha256": data_fingerprint(spec, cache=_HASHES).sha256}


def reload_task(surrogate, device, *, where: str = "the model", rescale: bool = False):
    """The data a saved model was trained on, in the model's OWN stored scaling, and its provenance.

    The task is rebuilt from the provenance; its data hash and scalings are compared with what the
    surrogate records. A difference stops with one line (exit 2) unless ``rescale``: then the data
    are mapped into the stored scaling, so every metric is that of the network as a user calls it
    (``sciprune.load(path)(x)``). Returns ``(loaded task, provenance, list of the differences)``.
    """
    from dataclasses import replace

    from .checks import check_seed
    from .config import DataSpec, NoiseSpec
    from .tasks import build_task

    prov = surrogate.metadata.get("provenance", {})
    if not isinstance(prov.get("data"), dict):
        raise UserError(f"{where}: the model records no data provenance (key 'provenance.data'); it was not "
                        "saved by 'sciprune train' or 'run'")
    spec = validated(DataSpec, **prov["data"], _origin=f"{where}: key provenance.data")
    noise = prov.get("noise", {"kind": "none", "level": 0.0})
    if not isinstance(noise, dict) or set(noise) != {"kind", "level"}:
        raise UserError(f"{where}: key 'provenance.noise' must be an object with 'kind' and 'level', got {noise!r}")
    validated(NoiseSpec, kind=noise["kind"], levels=[noise["level"]], _origin=f"{where}: key provenance.noise")
    seed = prov.get("seed", 0)
    check_seed(seed, f"{where}: key 'provenance.seed'")
    problems = []
    recorded = prov.get("data_sha256")
    if recorded is not None:
        actual = data_hash(spec)["data_sha256"]
        if actual != recorded:
            problems.append(f"the data ({spec.file or spec.source}) now hash to {str(actual)[:12]}... but the model "
                            f"records {str(recorded)[:12]}... (provenance.data_sha256)")
    loaded = build_task(spec, noise_kind=noise["kind"], noise_level=noise["level"], seed=seed)
    task = loaded.task
    if (task.in_features, task.out_features) != (surrogate.in_features, surrogate.out_features):
        raise UserError(f"{where}: the model maps {surrogate.in_features} -> {surrogate.out_features} features but "
                        f"its data now give {task.in_features} -> {task.out_features}")
    task, differ = in_model_units(task, surrogate)
    problems += differ
    if problems and not rescale:
        raise UserError(f"{where}: " + "; ".join(problems) + "; the data or the model changed since it was saved. "
                        "Pass --rescale-data to use the network as stored, on the current data in its stored scaling")
    return replace(loaded, task=task).to(device, surrogate.dtype), prov, problems


def in_model_units(task, surrogate):
    """``task`` with its data mapped into the surrogate's stored scalings (and carrying them), and a line
    for each scaling that differs from the one rebuilt from the data."""
    from dataclasses import replace

    import numpy as np

    from .scaling import Scaling

    def same(a, b) -> bool:
        return np.allclose(a.shift, b.shift, rtol=1e-12, atol=0) and np.allclose(a.scale, b.scale, rtol=1e-12, atol=0)

    def remap(t, old, new):
        return None if t is None else new.forward(old.inverse(t.double())).to(t.dtype)

    changes, problems = {}, []
    sides = [("input_scaling", ("X_train", "X_val", "X_test"), task.in_features)]
    if task.task == "regression":
        sides.append(("output_scaling", ("Y_train", "Y_val", "Y_test", "Y_train_clean", "Y_val_clean", "Y_test_clean"),
                      task.out_features))
    for key, names, n in sides:
        old = getattr(task, key) or Scaling.identity(n)
        new = getattr(surrogate, key) or Scaling.identity(n)
        if same(old, new):
            changes[key] = new
            continue
        problems.append(f"its stored {key} (shift {brief(new.shift)}, scale {brief(new.scale)}) differs from the "
                        f"one rebuilt from its data (shift {brief(old.shift)}, scale {brief(old.scale)})")
        changes.update({name: remap(getattr(task, name), old, new) for name in names}, **{key: new})
    return replace(task, **changes), problems


def brief(values) -> str:
    vals = [f"{v:.6g}" for v in list(values)[:3]]
    return "[" + ", ".join(vals) + (", ...]" if len(values) > 3 else "]")


def spec_of(prov: dict):
    from .config import DataSpec

    return DataSpec(**prov["data"])


def note(problems: list[str]) -> None:
    """Say on stderr what --rescale-data accepted."""
    for line in problems:
        click.echo(f"note: {line}; using the stored scaling (--rescale-data)", err=True)
