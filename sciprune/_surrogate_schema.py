"""The one schema of a saved surrogate's ``model.json``: read, checked and refused in one place.

:func:`read_model_json` reads the file (bounded in size, nesting and type), checks the format and
version first (so another program's JSON or a newer format gets its own message), then validates
every key through :class:`ModelRecord` (pydantic, strict types, unknown keys refused). Every
problem is a :class:`~sciprune.errors.DataFormatError` of one line naming the file and the key:
wrong types, a list where an object is expected, missing keys, NaN or infinite scalings, zero
scales, layer sizes that would not fit in memory, nesting deeper than :data:`MAX_DEPTH`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import DataFormatError

__all__ = ["ModelRecord", "ScalingRecord", "read_model_json", "FORMAT", "FORMAT_VERSION", "MAX_DEPTH",
           "MAX_JSON_BYTES", "DTYPES"]

FORMAT = "sciprune-surrogate"
FORMAT_VERSION = 1
#: Deepest nesting of objects and lists accepted in model.json (a saved model needs about 6).
MAX_DEPTH = 64
#: Largest model.json read (the weights are in their own file; a description is kilobytes).
MAX_JSON_BYTES = 64 * 2**20
#: Most input or output features of a scaling (a sanity bound; MNIST has 784).
MAX_FEATURES = 2**24
DTYPES = ("float16", "bfloat16", "float32", "float64")

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=0)]
LayerSize = Annotated[int, Field(ge=1, le=2**40)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class ScalingRecord(_Strict):
    """``physical = network * scale + shift`` per feature; finite values, non-zero scales."""

    shift: list[FiniteFloat] = Field(min_length=1, max_length=MAX_FEATURES)
    scale: list[FiniteFloat] = Field(min_length=1, max_length=MAX_FEATURES)

    @field_validator("scale")
    @classmethod
    def _nonzero(cls, v: list[float]) -> list[float]:
        zeros = [i for i, x in enumerate(v) if x == 0]
        if zeros:
            raise ValueError(f"scale must be non-zero, got 0 at index {zeros[0]}")
        return v

    @model_validator(mode="after")
    def _lengths(self) -> "ScalingRecord":
        if len(self.shift) != len(self.scale):
            raise ValueError(f"shift and scale must have one length, got {len(self.shift)} and {len(self.scale)}")
        return self


class ArchitectureRecord(_Strict):
    """What :func:`sciprune.models.build_model` rebuilds: an MLP of layer ``sizes``."""

    kind: Literal["mlp"]
    sizes: list[LayerSize] = Field(min_length=2, max_length=1025)
    activation: Literal["tanh", "relu", "gelu", "sin"]

    @field_validator("sizes")
    @classmethod
    def _fits_in_memory(cls, v: list[int]) -> list[int]:
        from .models import check_model_size

        check_model_size(v)  # refused with the estimate, before anything is allocated
        return v


class WeightsRecord(_Strict):
    file: Literal["weights.safetensors"]
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: Count


class MaskRecord(_Strict):
    key: str
    kept: Count
    total: Count


class ModelRecord(_Strict):
    """Every key of ``model.json`` (see ``docs/api_surrogate.md``)."""

    format: Literal["sciprune-surrogate"]
    format_version: int
    architecture: ArchitectureRecord
    dtype: Literal["float16", "bfloat16", "float32", "float64"]
    task: Literal["regression", "classification"]
    weights: WeightsRecord
    input_scaling: Optional[ScalingRecord] = None
    output_scaling: Optional[ScalingRecord] = None
    input_names: Optional[list[str]] = None
    output_names: Optional[list[str]] = None
    class_names: Optional[list[str]] = None
    provenance: dict[str, Any] = Field(default_factory=dict)
    masks: dict[str, MaskRecord] = Field(default_factory=dict)
    sparsity: dict[str, Any] = Field(default_factory=dict)
    versions: dict[str, str] = Field(default_factory=dict)


_JSON_TYPES = {"dict_type": "must be a JSON object", "model_type": "must be a JSON object",
               "model_attributes_type": "must be a JSON object", "list_type": "must be a JSON list"}


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format(jfile: Path, err: ValidationError) -> str:
    """One line naming each bad key (at most three), what was expected and what was found."""
    errors = err.errors()
    parts = []
    for e in errors[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            parts.append(f"key '{loc}' is not part of the format")
            continue
        if e["type"] == "missing":
            parts.append(f"key '{loc}' is missing")
            continue
        msg = _JSON_TYPES.get(e["type"]) or e["msg"].removeprefix("Value error, ")
        parts.append(f"key '{loc}': {msg}, got {_short(e.get('input'))}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return f"{jfile}: " + "; ".join(parts) + more + "; the file is corrupted or was edited, save the model again"


def _depth_path(value: Any, limit: int) -> str | None:
    """The key path of the first value nested deeper than ``limit``, else None (no recursion)."""
    stack: list[tuple[Any, int, str]] = [(value, 0, "")]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, (dict, list)):
            if depth >= limit:
                return where or "(top level)"
            items = node.items() if isinstance(node, dict) else enumerate(node)
            stack.extend((v, depth + 1, f"{where}.{k}" if where else str(k)) for k, v in items)
    return None


def read_model_json(jfile: Path) -> tuple[ModelRecord, dict]:
    """The validated record of ``jfile`` and the raw dictionary (kept as the surrogate's metadata)."""
    size = jfile.stat().st_size
    if size > MAX_JSON_BYTES:
        raise DataFormatError(f"{jfile} is {size:,} bytes, more than the {MAX_JSON_BYTES:,} a model description "
                              "can need; it is not a sciprune model.json")
    try:
        meta = json.loads(jfile.read_bytes().decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataFormatError(f"{jfile} is not valid JSON ({err}); the file is corrupted, save the model again") from None
    except RecursionError:
        raise DataFormatError(f"{jfile}: objects or lists nested deeper than Python can read; not a sciprune "
                              "model.json") from None
    if not isinstance(meta, dict):
        raise DataFormatError(f"{jfile} must hold a JSON object, got {type(meta).__name__}")
    deep = _depth_path(meta, MAX_DEPTH)
    if deep is not None:
        raise DataFormatError(f"{jfile}: key '{deep}' is nested more than {MAX_DEPTH} levels deep; "
                              "not a sciprune model.json")
    if "format" not in meta:
        raise DataFormatError(f"{jfile} has no key 'format'; it was not written by sciprune.save or is corrupted")
    if meta["format"] != FORMAT:
        raise DataFormatError(f"{jfile}: key 'format' is {_short(meta['format'])}, expected {FORMAT!r}")
    version = meta.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        raise DataFormatError(
            f"{jfile}: key 'format_version' is {_short(version)}; this sciprune reads version {FORMAT_VERSION}. "
            f"Load it with the sciprune version that wrote it ({_short(meta.get('versions', {}))})"
        )
    try:
        return ModelRecord.model_validate(meta), meta
    except ValidationError as err:
        raise DataFormatError(_format(jfile, err)) from None
