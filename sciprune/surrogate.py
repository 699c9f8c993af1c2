"""A pruned surrogate on disk: pickle-free weights plus a JSON description, loaded without user code.

A saved surrogate is a directory ``<name>.sciprune/`` holding

- ``weights.safetensors``: every tensor of the model's ``state_dict`` in its own dtype, plus each
  mask set on the model as a ``uint8`` tensor (1 = kept) under ``mask/<parameter name>``;
- ``model.json``: format and version, architecture (:func:`sciprune.models.describe`), dtype, task,
  input/output scaling, feature and class names, provenance, sparsity, library versions and the
  sha256 of the weights file.

:func:`save` writes into a hidden sibling directory, fsyncs it and renames it into place, so the
path holds either the old model, the new one, or (after a crash between the two renames) nothing,
never a half-written model. :func:`load` checks the format, the checksum and every key, rebuilds the
network with :func:`sciprune.models.build_model` and returns a :class:`Surrogate` that a simulation
code calls on numpy arrays in physical units. The layout is described in ``docs/api_surrogate.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
import safetensors.torch
import torch
from torch import nn

from .errors import DataFormatError, SciPruneError
from .masks import sparsity
from .models import describe, linear_chain
from .outputs import fsync_dir, prepare_output
from .scaling import Scaling
from ._surrogate_files import (JSON_FILE, MASK_PREFIX, WEIGHTS_FILE, _as_path, _canonical_tensors, _check_replaceable,
                               _jsonable, _rebuild, _safetensors_bytes, _swap_into_place, _versions, _write_file)
from ._surrogate_schema import FORMAT, FORMAT_VERSION, read_model_json

__all__ = ["Surrogate", "save", "load", "FORMAT", "FORMAT_VERSION"]

TASKS = ("regression", "classification")


class Surrogate:
    """A trained (pruned) network wrapped to be called on numpy arrays in physical units.

    ``s(X)`` with ``X`` shaped ``(..., F_in)`` returns ``(..., F_out)``; ``s(x, t, ...)`` with ``F_in``
    arrays broadcasts them to a common shape ``B``, stacks them as feature columns and returns ``B``
    (``F_out == 1``) or ``B + (F_out,)``. Inputs are mapped by ``input_scaling``, the network runs
    without gradients in its own dtype in chunks of ``batch_size`` rows, and outputs are mapped back
    by ``output_scaling``; the result is float64. For a classifier ``s(X)`` gives softmax
    probabilities (float64) and :meth:`predict` the class indices.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        input_scaling: Scaling | None = None,
        output_scaling: Scaling | None = None,
        task: str = "regression",
        input_names: list[str] | None = None,
        output_names: list[str] | None = None,
        class_names: list[str] | None = None,
        metadata: dict | None = None,
        batch_size: int = 65536,
    ) -> None:
        lins = linear_chain(model)
        self.in_features, self.out_features = lins[0].in_features, lins[-1].out_features
        _check_task_args(task, self.in_features, self.out_features, input_scaling, output_scaling,
                         input_names, output_names, class_names)
        self.model = model.eval()
        self.input_scaling, self.output_scaling, self.task = input_scaling, output_scaling, task
        self.input_names = list(input_names) if input_names is not None else None
        self.output_names = list(output_names) if output_names is not None else None
        self.class_names = list(class_names) if class_names is not None else None
        self.metadata = dict(metadata) if metadata is not None else {}
        self.batch_size = _check_batch_size(batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> "Surrogate":
        """Move (and optionally cast) the network in place; returns ``self``."""
        from .devices import resolve_device

        if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise SciPruneError(f"dtype must be a floating torch.dtype such as torch.float64, got {dtype!r}")
        self.model.to(device=resolve_device(device) if device is not None else None, dtype=dtype)
        return self

    def __call__(self, *xs, batch_size: int | None = None) -> np.ndarray:
        """Outputs in physical units (probabilities for a classifier); see the class docstring."""
        z, batch_shape, coords = self._forward(xs, batch_size)
        if self.task == "classification":
            out = torch.softmax(z.to(torch.float64), dim=-1).numpy()
        else:
            out = z.to(torch.float64).numpy()
            if self.output_scaling is not None:
                out = self.output_scaling.inverse(out)
        drop = coords and self.out_features == 1
        return out.reshape(batch_shape if drop else (*batch_shape, self.out_features))

    def predict(self, *xs, batch_size: int | None = None) -> np.ndarray:
        """Class indices (int64, argmax of the logits), shaped like the batch; a regressor's outputs."""
        if self.task != "classification":
            return self(*xs, batch_size=batch_size)
        z, batch_shape, _ = self._forward(xs, batch_size)
        return z.argmax(dim=-1).numpy().reshape(batch_shape)

    @torch.no_grad()
    def _forward(self, xs: tuple, batch_size: int | None) -> tuple[torch.Tensor, tuple[int, ...], bool]:
        """Network outputs (N, F_out) on the CPU in the network's dtype, the batch shape, coordinate form."""
        x, batch_shape, coords = self._as_rows(xs)
        self._check_finite(x)
        if self.input_scaling is not None:
            x = self.input_scaling.forward(x)
        n, step = x.shape[0], _check_batch_size(self.batch_size if batch_size is None else batch_size)
        device, dtype = self.device, self.dtype
        xt = torch.from_numpy(np.ascontiguousarray(x))
        parts = [self.model(xt[i : i + step].to(device=device, dtype=dtype)).cpu() for i in range(0, n, step)]
        z = torch.cat(parts) if parts else torch.empty(0, self.out_features, dtype=dtype)
        return z, batch_shape, coords

    def _as_rows(self, xs: tuple) -> tuple[np.ndarray, tuple[int, ...], bool]:
        """(N, F_in) float64 rows, the batch shape, and whether the inputs came as coordinate arrays."""
        f = self.in_features
        names = f" ({', '.join(self.input_names)})" if self.input_names else ""
        if not xs:
            raise SciPruneError(f"expected inputs with F_in={f} features{names}; got no argument")
        arrays = [_real_array(a, i) for i, a in enumerate(xs)]
        one = arrays[0]
        if len(arrays) == 1 and not (f == 1 and (one.ndim == 0 or one.shape[-1] != 1)):
            if one.ndim == 0 or one.shape[-1] != f:
                raise SciPruneError(
                    f"expected F_in={f} input features{names} along the last axis, got an array of shape "
                    f"{one.shape}; pass an (N, {f}) array or {f} coordinate arrays as s(x, t, ...)"
                )
            return one.reshape(-1, f), one.shape[:-1], False
        if len(arrays) != f:
            raise SciPruneError(
                f"expected F_in={f} input features{names}, got {len(arrays)} coordinate arrays; pass one "
                f"array per feature as s(x, t, ...) or a single (N, {f}) array"
            )
        try:
            arrays = np.broadcast_arrays(*arrays)
        except ValueError:
            shapes = [a.shape for a in arrays]
            raise SciPruneError(f"coordinate arrays of shapes {shapes} do not broadcast together") from None
        return np.stack([a.reshape(-1) for a in arrays], axis=1), arrays[0].shape, True

    def _check_finite(self, x: np.ndarray) -> None:
        bad = ~np.isfinite(x)
        if bad.any():
            row, col = (int(v[0]) for v in np.nonzero(bad))
            name = self.input_names[col] if self.input_names else f"feature {col}"
            raise SciPruneError(f"surrogate inputs must be finite, got {x[row, col]} in {name} of row {row}")

    def __repr__(self) -> str:
        arch = self.metadata.get("architecture") or describe(self.model)
        sizes = "-".join(str(s) for s in arch.get("sizes", []))
        zeros = sparsity(self.model)["weights"]["sparsity"]
        prov = self.metadata.get("provenance") or {}
        extra = "".join(f", {k}={prov[k]!r}" for k in ("method", "ratio") if k in prov)
        dtype = str(self.dtype).removeprefix("torch.")
        return (
            f"Surrogate({arch.get('kind', 'mlp')} {sizes} {arch.get('activation', '')}, {dtype}, {self.task}, "
            f"weight sparsity {zeros:.1%}{extra})"
        )


def save(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    input_scaling: Scaling | None = None,
    output_scaling: Scaling | None = None,
    task: str = "regression",
    provenance: dict | None = None,
    input_names: list[str] | None = None,
    output_names: list[str] | None = None,
    class_names: list[str] | None = None,
) -> Path:
    """Write ``model`` and what is needed to call it in physical units to the directory ``path``.

    Args:
        model: an :class:`~sciprune.models.MLP` or any chain that :func:`describe` accepts and
            :func:`build_model` rebuilds exactly (biased Linear layers, default activation options).
        path: the directory to create (e.g. ``runs/x/model.sciprune``); an existing saved surrogate
            there is replaced atomically, any other existing file or non-empty directory is refused.
        input_scaling, output_scaling: physical -> network units maps, sized ``F_in`` and ``F_out``
            (no output scaling for a classifier).
        task: ``"regression"`` or ``"classification"``.
        provenance: JSON-serialisable record (method, ratio, seed, dataset, noise, ...); numpy and
            torch scalars/arrays, tuples, paths and dataclasses are converted, non-finite floats are
            written as the strings ``"nan"``, ``"inf"``, ``"-inf"``.
        input_names, output_names, class_names: optional labels, one per feature / class.

    Returns:
        The path of the saved directory.
    """
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    path = _as_path(path, "save")
    if provenance is not None and not isinstance(provenance, dict):
        raise SciPruneError(f"provenance must be a dict or None, got {type(provenance).__name__}")
    arch = describe(model)
    sizes = arch["sizes"]
    _check_task_args(task, sizes[0], sizes[-1], input_scaling, output_scaling, input_names, output_names, class_names)
    tensors, masks = _canonical_tensors(model, arch)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "dtype": str(tensors["linear0.weight"].dtype).removeprefix("torch."),
        "task": task,
        "input_scaling": input_scaling.to_dict() if input_scaling is not None else None,
        "output_scaling": output_scaling.to_dict() if output_scaling is not None else None,
        "input_names": _names(input_names), "output_names": _names(output_names), "class_names": _names(class_names),
        "provenance": _jsonable(dict(provenance or {}), "provenance"),
        "masks": {name: {"key": MASK_PREFIX + name, "kept": int(m.sum()), "total": m.numel()} for name, m in masks.items()},
        "sparsity": sparsity(model),
        "versions": _versions(),
    }
    for name, m in masks.items():
        tensors[MASK_PREFIX + name] = m.to(torch.uint8).contiguous()

    _check_replaceable(path)
    prepare_output(path.parent, is_dir=True, what="save")
    tmp = path.parent / f".{path.name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        os.mkdir(tmp)
        data = _safetensors_bytes(tensors)
        _write_file(tmp / WEIGHTS_FILE, data)
        meta["weights"] = {"file": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        text = json.dumps(meta, indent=2, allow_nan=False, sort_keys=True) + "\n"
        _write_file(tmp / JSON_FILE, text.encode("utf-8"))
        fsync_dir(tmp)
        _swap_into_place(tmp, path)
    except OSError as err:  # disk full, quota, I/O error: nothing of the new model is left behind
        shutil.rmtree(tmp, ignore_errors=True)
        raise SciPruneError(f"cannot save the surrogate to {path}: {err.strerror or err}; nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> Surrogate:
    """Load a surrogate written by :func:`save` (the directory, or its ``model.json``) onto ``device``
    (``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``).

    ``model.json`` is read through one schema (:mod:`sciprune._surrogate_schema`): a wrong type, a
    missing key, a NaN or infinite scaling is a :class:`~sciprune.errors.DataFormatError` naming the key.
    """
    from .devices import resolve_device

    path = _as_path(path, "load")
    dev = resolve_device(device)
    if path.is_file() and path.name == JSON_FILE:
        path = path.parent
    if not path.is_dir():
        what = "is a file, not a saved surrogate directory" if path.exists() else "does not exist"
        aside = sorted(path.parent.glob(f".{path.name}.old-*")) if path.parent.is_dir() else []
        hint = f" (an interrupted save left the previous model at {aside[-1]})" if aside else ""
        raise DataFormatError(
            f"cannot load a surrogate from {path}: the path {what}{hint}; pass the directory written by sciprune.save"
        )
    jfile, wfile = path / JSON_FILE, path / WEIGHTS_FILE
    for f in (jfile, wfile):
        if not f.is_file():
            raise DataFormatError(f"{f} is missing or not a regular file: {path} is not a complete saved surrogate; "
                                  "save the model again")
    record, meta = read_model_json(jfile)
    size = wfile.stat().st_size
    if size != record.weights.bytes:
        raise DataFormatError(f"{wfile} has {size:,} bytes but {jfile} records {record.weights.bytes:,} (key "
                              "'weights.bytes'); the weights were modified or truncated after saving")
    data = wfile.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != record.weights.sha256:
        raise DataFormatError(
            f"checksum mismatch for {wfile}: sha256 is {actual} but {jfile} records {record.weights.sha256}; "
            "the weights were modified or truncated after saving"
        )
    try:
        tensors = safetensors.torch.load(data)
    except Exception as err:  # safetensors raises its own SafetensorError
        raise DataFormatError(f"{wfile} is not a readable safetensors file: {err}") from None
    model = _rebuild(meta, tensors, jfile, wfile)
    wrong = sorted({str(t.dtype).removeprefix("torch.") for k, t in tensors.items() if not k.startswith(MASK_PREFIX)}
                   - {record.dtype})
    if wrong:
        raise DataFormatError(f"{wfile} holds {wrong} tensors but {jfile} records key 'dtype' = {record.dtype!r}")
    in_s, out_s = (Scaling(np.asarray(r.shift), np.asarray(r.scale)) if r is not None else None
                   for r in (record.input_scaling, record.output_scaling))
    try:
        return Surrogate(
            model.to(dev), input_scaling=in_s, output_scaling=out_s, task=record.task, metadata=meta,
            input_names=record.input_names, output_names=record.output_names, class_names=record.class_names,
        )
    except SciPruneError as err:
        raise DataFormatError(f"{jfile}: {err}") from None


# --- helpers -----------------------------------------------------------------------------------


def _check_task_args(task, f_in, f_out, input_scaling, output_scaling, input_names, output_names, class_names) -> None:
    if task not in TASKS:
        raise SciPruneError(f"task must be one of {TASKS}, got {task!r}")
    for label, sc, n in (("input_scaling", input_scaling, f_in), ("output_scaling", output_scaling, f_out)):
        if sc is not None and not isinstance(sc, Scaling):
            raise SciPruneError(f"{label} must be a sciprune.Scaling or None, got {type(sc).__name__}")
        if sc is not None and sc.size != n:
            raise SciPruneError(f"{label} has {sc.size} features but the model has {n}")
        if sc is not None and not (np.isfinite(sc.shift).all() and np.isfinite(sc.scale).all()):
            raise SciPruneError(f"{label} must hold finite numbers, got shift {sc.shift.tolist()} and scale "
                                f"{sc.scale.tolist()}")
    if task == "classification" and output_scaling is not None:
        raise SciPruneError("a classifier has no output_scaling (its outputs are logits); pass output_scaling=None")
    if task == "regression" and class_names is not None:
        raise SciPruneError("class_names are only for task='classification'")
    for label, names, n in (("input_names", input_names, f_in), ("output_names", output_names, f_out),
                            ("class_names", class_names, f_out)):
        if names is not None and (isinstance(names, str) or not isinstance(names, (list, tuple))
                                  or len(names) != n or not all(isinstance(x, str) for x in names)):
            raise SciPruneError(f"{label} must be a list of {n} strings, got {names!r}")


def _check_batch_size(value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SciPruneError(f"batch_size must be a positive integer, got {value!r}")
    return int(value)


def _real_array(a, i: int) -> np.ndarray:
    """Input ``i`` as a float64 array; complex, text and object inputs are refused, not cut."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy() if a.dtype != torch.bfloat16 else a.detach().cpu().double().numpy()
    try:
        arr = np.asarray(a)
    except (TypeError, ValueError) as err:
        raise SciPruneError(f"surrogate input {i} must be a numeric array: {err}") from None
    if arr.dtype.kind not in "biuf":
        kind = "complex" if arr.dtype.kind == "c" else str(arr.dtype)
        raise SciPruneError(f"surrogate input {i} must be a numeric array of real numbers, got dtype {kind} and shape "
                            f"{arr.shape}; pass float arrays (the real part is never taken silently)")
    return arr.astype(np.float64, copy=False)


def _names(names) -> list[str] | None:
    return [str(n) for n in names] if names is not None else None
