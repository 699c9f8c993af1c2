"""Export a saved surrogate for simulation codes: one ONNX graph that takes and returns physical units.

:func:`export_onnx` writes the network of a saved surrogate (:func:`sciprune.load`), compacted first
when whole hidden neurons are dead (:func:`sciprune.compaction.compact`, same outputs), wrapped in the
same steps :meth:`sciprune.Surrogate.__call__` takes::

    z = ((x - in_shift) / in_scale)       in float64, then cast to the network's dtype
    y = net(z)                             Gemm + activation layers, in the network's dtype
    out = float64(y) * out_scale + out_shift    (regression)   or   softmax(float64(y))  (classification)

so that a C, C++ or Fortran code calls it through ONNX Runtime on a float64 ``(batch, F_in)`` array in
physical units and gets float64 ``(batch, F_out)`` back; the batch axis is dynamic. What the columns
are, the scalings and the model's provenance are written into the graph's ``doc_string`` and
``metadata_props``. Before anything is written the graph passes ``onnx.checker`` and is run under
ONNX Runtime on points spread over the input scaling's box and compared with the surrogate itself;
the file is then written atomically (:func:`sciprune.outputs.write_bytes_atomic`).

Exporter: ``torch.onnx.export(..., dynamo=True)`` (the ``torch.export``-based exporter, which needs
``onnxscript``). With torch 2.13 both exporters handle this small wrapper offline; the TorchScript one
(``dynamo=False``) is deprecated since torch 2.9 and warns on every call, so the supported exporter is
used even though it takes about a second per export instead of ten milliseconds. It emits opset 18
and above natively (lower opsets go through a version converter), so opsets below 18 are refused.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .checks import check_choice, check_int
from .compaction import compact as compact_model
from .compaction import dead_neurons
from .errors import SciPruneError
from .masks import remove_masks
from .models import describe
from .outputs import output_or_nothing, write_bytes_atomic

__all__ = ["export_onnx", "ExportReport", "FORMATS", "MIN_OPSET", "DEFAULT_OPSET", "EXTRA", "onnx_metadata"]

FORMATS = ("onnx",)
#: Lowest opset the torch.export-based exporter emits without a version converter.
MIN_OPSET = 18
#: Default opset: the lowest native one, read by ONNX Runtime 1.14 (2023) and later.
DEFAULT_OPSET = 18
#: The extra that installs what export needs.
EXTRA = "pip install 'sciprune[export]'"
INPUT_NAME = "input"
_REQUIRED = ("onnx", "onnxscript", "onnxruntime")
_UNITS = "physical units of the data the surrogate was trained on (provenance.data)"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_onnx` wrote: the file, the opset, the layer sizes saved and exported, the
    neurons removed per hidden layer, the dead neurons left in (``compact=False``), and the largest
    difference from the surrogate on the check points relative to the largest output there."""

    path: Path
    opset: int
    saved_sizes: list[int]
    exported_sizes: list[int]
    removed: list[int]
    dead_kept: int
    check_points: int
    max_rel_diff: float

    def describe_compaction(self) -> str:
        """One line saying which neurons compaction removed (or that it removed none)."""
        if self.dead_kept:
            return (f"exported {_sizes(self.exported_sizes)} as saved, with its {self.dead_kept} dead hidden neurons "
                    "(no compaction)")
        if self.saved_sizes == self.exported_sizes:
            return f"no dead hidden neurons: exported {_sizes(self.exported_sizes)} as saved"
        pairs = enumerate(zip(self.removed, self.saved_sizes[1:-1]))
        parts = [f"{r} of {n} in hidden layer {i + 1}" for i, (r, n) in pairs if r]
        return (f"compacted {_sizes(self.saved_sizes)} to {_sizes(self.exported_sizes)}: removed "
                f"{sum(self.removed)} dead neurons ({', '.join(parts)}); same outputs")


def export_onnx(surrogate, path: str | os.PathLike, *, compact: bool = True, opset: int = DEFAULT_OPSET,
                force: bool = False, fmt: str = "onnx") -> ExportReport:
    """Write ``surrogate`` (a :class:`~sciprune.Surrogate` or the path of a saved one) to ``path`` as
    an ONNX graph in physical units (module docstring).

    Args:
        surrogate: a loaded surrogate or the directory (or ``model.json``) written by :func:`sciprune.save`.
        path: the ``.onnx`` file to write; an existing file is refused unless ``force``.
        compact: remove dead hidden neurons first (:func:`sciprune.compaction.compact`); the weight
            matrices in the graph are then smaller and the outputs the same.
        opset: ONNX opset, from :data:`MIN_OPSET` to the newest the installed ``onnx`` knows.
        force: replace an existing file at ``path`` (atomically).
        fmt: the format; only ``"onnx"``.

    Returns:
        An :class:`ExportReport`. Every problem is a one-line :class:`SciPruneError`, raised before
        anything is written; no file or temporary file is left behind.
    """
    check_choice(fmt, FORMATS, "format")
    onnx = _require()
    opset = check_int(opset, "opset", lo=MIN_OPSET, hi=int(onnx.defs.onnx_opset_version()))
    if not isinstance(compact, bool) or not isinstance(force, bool):
        raise SciPruneError(f"compact and force must be True or False, got {compact!r} and {force!r}")
    sur = _surrogate(surrogate)
    out = _check_output(path, force)
    net, saved, exported, dead = _network(sur, compact)
    proto = _to_onnx(net, sur, opset)
    onnx_metadata(proto, sur, saved, exported, source=None if _is_surrogate(surrogate) else str(surrogate))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as err:  # onnx raises ValidationError / InferenceError
        raise SciPruneError(f"the exported graph fails onnx.checker: {_first_line(err)}") from None
    data = proto.SerializeToString()
    n, diff = _verify(data, sur)
    try:
        with output_or_nothing(out, what="export"):
            write_bytes_atomic(out, data)
    except OSError as err:  # disk full, quota, I/O error: atomic_path has removed its temporary file
        raise SciPruneError(f"cannot write {out}: {err.strerror or err}; nothing was written") from None
    removed = [a - b for a, b in zip(saved[1:-1], exported[1:-1])]
    return ExportReport(out, opset, saved, exported, removed, 0 if compact else dead, n, diff)


def _require():
    """``onnx`` if onnx, onnxscript and onnxruntime import; else one line naming the extra."""
    import importlib

    missing = []
    for name in _REQUIRED:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise SciPruneError(f"ONNX export needs the package(s) {', '.join(missing)}, which are not installed; "
                            f"install them with: {EXTRA}")
    import onnx

    return onnx


def _is_surrogate(obj) -> bool:
    from .surrogate import Surrogate

    return isinstance(obj, Surrogate)


def _surrogate(obj):
    from .surrogate import load

    sur = obj if _is_surrogate(obj) else load(obj)
    dtype = str(sur.dtype).removeprefix("torch.")
    if dtype not in ("float32", "float64"):
        raise SciPruneError(f"ONNX export takes float32 or float64 networks, this surrogate is {dtype}; "
                            "cast it first: sciprune.load(path).to(dtype=torch.float32)")
    return sur


def _check_output(path, force: bool) -> Path:
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes) or not os.fspath(path):
        raise SciPruneError(f"export: the output must be a non-empty path of the .onnx file, got {path!r}")
    out = Path(os.fspath(path))
    if "\x00" in str(out):
        raise SciPruneError(f"export: the output path {str(out)!r} contains a NUL byte")
    if out.is_dir():
        raise SciPruneError(f"export: {out} is a folder; give the path of the .onnx file to write")
    if (out.exists() or out.is_symlink()) and not force:
        raise SciPruneError(f"export: {out} exists; choose another output file or replace it with --force "
                            "(force=True)")
    return out


@torch.no_grad()
def _network(sur, compact: bool) -> tuple[nn.Sequential, list[int], list[int], int]:
    """A mask-free CPU copy of the surrogate's network (compacted when asked and when it has dead
    neurons), the saved layer sizes, the exported ones and the number of dead hidden neurons saved."""
    import copy

    net = copy.deepcopy(sur.model).cpu().eval()
    saved = describe(net)["sizes"]
    dead = sum(int(d.sum()) for d in dead_neurons(net))
    if compact and dead:
        net = compact_model(net)
    remove_masks(net)  # masked weights are zero already (sciprune.save checks it)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, saved, describe(net)["sizes"], dead


class _PhysicalUnits(nn.Module):
    """``net`` between the surrogate's input and output scalings, in float64 outside the network."""

    def __init__(self, net: nn.Sequential, sur) -> None:
        super().__init__()
        self.net, self.dtype, self.classify = net, sur.dtype, sur.task == "classification"
        for side, sc in (("input", sur.input_scaling), ("output", sur.output_scaling)):
            self.register_buffer(f"{side}_shift", _f64(sc.shift) if sc is not None else None)
            self.register_buffer(f"{side}_scale", _f64(sc.scale) if sc is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shift is not None:
            x = (x - self.input_shift) / self.input_scale
        y = self.net(x.to(self.dtype)).to(torch.float64)
        if self.classify:
            return torch.softmax(y, dim=-1)
        return y * self.output_scale + self.output_shift if self.output_shift is not None else y


def _f64(values: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64))


def _output_name(sur) -> str:
    return "probabilities" if sur.task == "classification" else "output"


def _to_onnx(net: nn.Sequential, sur, opset: int):
    """The ONNX ModelProto of the wrapped network, batch axis dynamic, exporter chatter silenced."""
    from torch.export import Dim

    wrapper = _PhysicalUnits(net, sur).eval()
    example = torch.zeros(3, sur.in_features, dtype=torch.float64)  # 3, not 1: a size-1 axis is specialised
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # "torchvision is not installed" and similar notes
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                wrapper, (example,), None, dynamo=True, opset_version=opset, verbose=False, optimize=True,
                input_names=[INPUT_NAME], output_names=[_output_name(sur)],
                dynamic_shapes=({0: Dim("batch")},),
            )
    except Exception as err:  # torch.onnx raises its own error types
        raise SciPruneError(f"torch.onnx.export failed at opset {opset}: {_first_line(err)}") from None
    finally:
        quiet.setLevel(level)
    proto = program.model_proto
    for node in proto.graph.node:  # stack traces with local file paths and FX dumps: not for users
        del node.metadata_props[:]
    return proto


def onnx_metadata(proto, sur, saved: list[int], exported: list[int], *, source: str | None = None) -> None:
    """Describe the graph in ``proto`` in place: doc strings of the model, its input and its output, and
    ``metadata_props`` (strings; JSON where structured) taken from the surrogate's ``model.json``."""
    import sciprune

    f_in, f_out = sur.in_features, sur.out_features
    cols_out = sur.class_names if sur.task == "classification" else sur.output_names
    inp = {"name": INPUT_NAME, "dtype": "float64", "shape": ["batch", f_in], "columns": sur.input_names,
           "units": _UNITS}
    out = {"name": _output_name(sur), "dtype": "float64", "shape": ["batch", f_out], "columns": cols_out,
           "units": "probabilities (softmax of the logits), one column per class" if sur.task == "classification"
           else _UNITS}
    meta = sur.metadata or {}
    arch = dict(describe(sur.model), sizes=exported)
    props = {
        "format": "sciprune-surrogate-onnx",
        "task": sur.task,
        "input": inp,
        "output": out,
        "input_scaling": sur.input_scaling.to_dict() if sur.input_scaling is not None else None,
        "output_scaling": sur.output_scaling.to_dict() if sur.output_scaling is not None else None,
        "scaling_convention": "network = (physical - shift) / scale; applied inside the graph",
        "architecture": arch,
        "network_dtype": str(sur.dtype).removeprefix("torch."),
        "compaction": {"saved_sizes": saved, "exported_sizes": exported,
                       "removed_per_hidden_layer": [a - b for a, b in zip(saved[1:-1], exported[1:-1])]},
        "provenance": meta.get("provenance", {}),
        "sparsity": meta.get("sparsity"),
        "source": source,
        "versions": {"sciprune": sciprune.__version__, "torch": torch.__version__, "saved_with": meta.get("versions")},
    }
    del proto.metadata_props[:]
    for key, value in props.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    proto.producer_name, proto.producer_version = "sciprune", sciprune.__version__
    proto.graph.name = "sciprune_surrogate"
    proto.graph.input[0].doc_string = _io_line(inp)
    proto.graph.output[0].doc_string = _io_line(out)
    proto.doc_string = (
        f"sciprune surrogate: {arch['kind']} {_sizes(exported)} {arch['activation']}, {sur.task}, network in "
        f"{props['network_dtype']}. {_io_line(inp)}. {_io_line(out)}. Input and output scaling are inside the "
        "graph: call it in physical units. metadata_props holds the scalings, the compaction and the provenance (JSON)."
    )


def _io_line(d: dict) -> str:
    cols = f" ({', '.join(d['columns'])})" if d["columns"] else ""
    return f"'{d['name']}': {d['dtype']} [batch, {d['shape'][1]}]{cols}, {d['units']}"


def _verify(data: bytes, sur, n: int = 64) -> tuple[int, float]:
    """Run the graph under ONNX Runtime on ``n`` points spread over the input scaling's box (network
    inputs uniform in [-1, 1]) and compare with the surrogate; refuse a graph that differs by more than
    the network dtype's rounding (1e-4 of the largest output for float32, 1e-10 for float64)."""
    import onnxruntime as ort

    z = np.random.default_rng(0).uniform(-1.0, 1.0, (n, sur.in_features))
    x = sur.input_scaling.inverse(z) if sur.input_scaling is not None else z
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        got = session.run(None, {INPUT_NAME: x})[0]
    except Exception as err:  # onnxruntime raises its own error types
        hint = ("export a float32 copy, sciprune.load(path).to(dtype=torch.float32) (ONNX Runtime's CPU kernels lack "
                "some float64 ops, such as gelu's Erf)" if sur.dtype == torch.float64 else "try another --opset")
        raise SciPruneError(f"ONNX Runtime {ort.__version__} cannot run the exported graph: {_first_line(err)}; "
                            f"{hint}; nothing was written") from None
    want = sur(x)
    top = max(float(np.abs(want).max()), 1e-300)
    diff = float(np.abs(got - want).max()) / top
    tol = 1e-4 if sur.dtype == torch.float32 else 1e-10
    if got.shape != want.shape or not diff <= tol:
        raise SciPruneError(f"the exported graph differs from the surrogate by {diff:.3g} of the largest output "
                            f"(tolerance {tol:g}); nothing was written")
    return n, diff


def _sizes(sizes: list[int]) -> str:
    return "-".join(str(s) for s in sizes)


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.splitlines()[0].split())[:300]
