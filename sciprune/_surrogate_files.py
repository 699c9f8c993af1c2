"""The files of a saved surrogate (:mod:`sciprune.surrogate`): canonical tensors and the model rebuilt
from them, JSON-safe provenance, deterministic safetensors bytes, and the atomic directory swap that
puts a new surrogate in place of an old one. Kept apart from the user-facing :class:`Surrogate`,
:func:`save` and :func:`load`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import nn

from .errors import DataFormatError, SciPruneError
from .masks import set_masks
from .models import build_model, linear_chain
from .outputs import fsync_dir
from ._surrogate_schema import FORMAT, FORMAT_VERSION

WEIGHTS_FILE = "weights.safetensors"
JSON_FILE = "model.json"
MASK_PREFIX = "mask/"


@torch.no_grad()
def _canonical_tensors(model: nn.Module, arch: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Tensors under the keys of ``build_model(arch)`` (``linear{i}.weight/bias``) and the set masks.

    Checks that the rebuilt chain computes the same function (same module types and options, biases
    present, every state_dict entry accounted for) and that masked weights are zero.
    """
    lins = linear_chain(model)
    for i, lin in enumerate(lins):
        if lin.bias is None:
            raise SciPruneError(f"Linear layer {i} has no bias; sciprune surrogates need biased Linear layers")
    rebuilt = build_model(arch, seed=0)
    mods, ref = [m for m in model], [m for m in rebuilt]
    for i, (a, b) in enumerate(zip(mods, ref)):
        if type(a) is not type(b) or a.extra_repr() != b.extra_repr():
            raise SciPruneError(
                f"module {i} of the chain is {a!r} but sciprune.build_model would rebuild it as {b!r}; "
                "only default activation options can be saved"
            )
    tensors, masks = {}, {}
    for i, lin in enumerate(lins):
        for attr in ("weight", "bias"):
            p = getattr(lin, attr)
            tensors[f"linear{i}.{attr}"] = p.detach().to("cpu", copy=True).contiguous()
            m = lin._buffers.get(f"{attr}_mask")
            if m is not None:
                if bool((p[~m.to(device=p.device, dtype=torch.bool)] != 0).any()):
                    raise SciPruneError(
                        f"linear{i}.{attr} has non-zero entries where its mask is False; call "
                        "sciprune.masks.enforce(model) before saving"
                    )
                masks[f"linear{i}.{attr}"] = m.detach().to("cpu", dtype=torch.bool)
    n_state = len(model.state_dict())
    if n_state != len(tensors) or set(rebuilt.state_dict()) != set(tensors):
        raise SciPruneError(f"the model's state_dict has {n_state} entries; only Linear weights and biases can be saved")
    dtypes = {t.dtype for t in tensors.values()}
    if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
        raise SciPruneError(f"all parameters must share one floating dtype, got {sorted(map(str, dtypes))}")
    return tensors, masks


def _rebuild(meta: dict, tensors: dict[str, torch.Tensor], jfile: Path, wfile: Path) -> nn.Module:
    try:
        model = build_model(meta["architecture"], seed=0)
    except (SciPruneError, KeyError, TypeError, ValueError) as err:
        raise DataFormatError(f"{jfile}: key 'architecture' is invalid: {err}") from None
    masks = {k[len(MASK_PREFIX):]: t.to(torch.bool) for k, t in tensors.items() if k.startswith(MASK_PREFIX)}
    state = {k: t.clone() for k, t in tensors.items() if not k.startswith(MASK_PREFIX)}
    try:
        model.load_state_dict(state, strict=True, assign=True)  # assign: keep the saved dtype bit for bit
    except RuntimeError as err:
        raise DataFormatError(f"{wfile} does not match the architecture in {jfile}: {err}") from None
    try:
        set_masks(model, masks)
    except SciPruneError as err:
        raise DataFormatError(f"{wfile}: bad mask tensor: {err}") from None
    return model.eval()


def _jsonable(value: Any, where: str) -> Any:
    """A JSON-ready copy of ``value``; SciPruneError naming the key for anything else."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)) and not isinstance(value, np.bool_):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(value, (np.ndarray, torch.Tensor)):
        arr = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        if arr.dtype.kind not in "biuf":
            raise SciPruneError(f"{where}: arrays of dtype {arr.dtype} are not JSON-serialisable; convert to a list of str")
        return _jsonable(arr.tolist(), where)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise SciPruneError(f"{where}: key {k!r} is a {type(k).__name__}; JSON keys must be strings")
            out[k] = _jsonable(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise SciPruneError(
        f"{where}: a value of type {type(value).__name__} is not JSON-serialisable; convert it to a str, "
        "number, bool, None, list or dict first"
    )


def _as_path(path, what: str) -> Path:
    """``path`` as a Path; a :class:`SciPruneError` for anything but a str or os.PathLike without NUL."""
    if not isinstance(path, (str, os.PathLike)) or isinstance(path, bytes):
        raise SciPruneError(f"{what}: path must be a str or os.PathLike naming the surrogate directory, "
                            f"got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str) or text == "" or "\x00" in text:
        raise SciPruneError(f"{what}: path must be a non-empty text path without NUL bytes, got {text!r}")
    return Path(text)


def _safetensors_bytes(tensors: dict[str, torch.Tensor]) -> bytes:
    """The safetensors file of ``tensors`` with its ``__metadata__`` written in a fixed key order.

    safetensors writes metadata keys in a random (hash) order, so the file is rebuilt here with its
    JSON header's keys sorted: saving the same model twice gives the same bytes.
    """
    raw = safetensors.torch.save(tensors)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["__metadata__"] = {"format": FORMAT, "format_version": str(FORMAT_VERSION)}
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # safetensors pads its header to 8 bytes with spaces
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def _versions() -> dict:
    import platform
    import sys

    pkg = sys.modules.get("sciprune")
    return {
        "sciprune": getattr(pkg, "__version__", "unknown"),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "safetensors": getattr(safetensors, "__version__", "unknown"),
        "python": platform.python_version(),
    }


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a previous surrogate (or an empty directory) at ``path``."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_symlink() or not path.is_dir():
        raise SciPruneError(f"{path} exists and is not a saved surrogate directory; choose another path or remove it")
    extra = sorted(p.name for p in path.iterdir() if p.name not in (JSON_FILE, WEIGHTS_FILE))
    if extra:
        raise SciPruneError(
            f"{path} exists and holds files that are not part of a saved surrogate ({', '.join(extra[:5])}); "
            "choose another path (e.g. <run>/model.sciprune) or remove it"
        )


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _swap_into_place(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an existing ``path`` is moved aside first and deleted after."""
    if not path.exists():
        os.rename(tmp, path)
        fsync_dir(path.parent)
        return
    old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:12]}"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)  # put the previous model back
        raise
    fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
