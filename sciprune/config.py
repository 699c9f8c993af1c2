"""Case files (TOML) -> frozen, validated configuration objects.

Only this module and the CLI read case files. Every section rejects unknown keys; a bad value is a
:class:`~sciprune.errors.ConfigError` naming the file, the key path and what was expected.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

__all__ = [
    "GenerateSpec", "DataSpec", "NoiseSpec", "ModelSpec", "TrainSpec", "PruneSpec", "BaselineSpec", "Case",
    "load_case", "parse_case",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class GenerateSpec(_Frozen):
    """How to make a missing diffusion-sorption file (``sciprune generate diffusion-sorption``)."""

    samples: int = Field(1, ge=1)
    nx: int = Field(256, ge=3)
    nt: int = Field(101, ge=2)
    mode: Literal["accurate", "pdebench"] = "accurate"
    workers: Optional[int] = Field(None, ge=1)


class DataSpec(_Frozen):
    """Where the data come from and how they are split.

    ``kind = "pdebench"``: coordinate regression (x, t) -> u on sample ``sample`` of ``file`` (made
    with ``generate`` if missing). ``kind = "classification"``: ``source`` is ``"digits"`` (built in),
    a directory of MNIST/Fashion-MNIST IDX files, or an HDF5 file with ``images``/``labels``.
    """

    kind: Literal["pdebench", "classification"] = "pdebench"
    file: Optional[str] = None
    sample: int = Field(0, ge=0)
    source: str = "digits"
    split: Literal["random", "time"] = "random"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    val_fraction: float = Field(0.1, ge=0, lt=1)
    generate: Optional[GenerateSpec] = None

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "pdebench" and not self.file:
            raise ValueError("data.file is required when data.kind = 'pdebench'")
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("data.test_fraction + data.val_fraction must be < 1")
        return self


class NoiseSpec(_Frozen):
    """Noise added to regression targets: one run per level (a = half-width for ``uniform``)."""

    kind: Literal["none", "uniform", "gaussian", "relative-gaussian"] = "uniform"
    levels: list[float] = Field(default_factory=lambda: [0.0], min_length=1)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        if any(not (x >= 0) for x in v):
            raise ValueError(f"noise levels must be >= 0, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"noise levels must be distinct, got {v}")
        return v


class ModelSpec(_Frozen):
    """A fully-connected network: ``widths`` of the hidden layers and one activation."""

    kind: Literal["mlp", "lenet-300-100"] = "mlp"
    widths: list[int] = Field(default_factory=lambda: [40] * 6)
    activation: Literal["tanh", "relu", "gelu", "sin"] = "tanh"

    @field_validator("widths")
    @classmethod
    def _widths(cls, v):
        if any(w < 1 for w in v):
            raise ValueError(f"widths must be positive integers, got {v}")
        return v


class TrainSpec(_Frozen):
    """Optimiser settings (see :class:`sciprune.training.TrainConfig`)."""

    optimizer: Literal["adam", "adamw", "sgd", "lbfgs"] = "adam"
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(1000, ge=0)
    batch_size: Optional[int] = Field(None, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)
    schedule: Literal["constant", "cosine", "step", "plateau"] = "constant"
    step_size: int = Field(100, ge=1)
    gamma: float = Field(0.5, gt=0, lt=1)
    patience: Optional[int] = Field(None, ge=1)
    eval_every: int = Field(1, ge=1)


class PruneSpec(_Frozen):
    """Which methods at which ratios; ``methods = ["all"]`` means every registered method.

    ``compensate``: methods also run with elimination-compensation bias shifts forced on (labelled
    ``<method>+shift``); ``no_compensate``: compensating methods also run without their shifts
    (``<method>-noshift``), so a study can separate better ranking from bias correction.
    ``snapshot_ratio``: the ratio whose fine-tuned networks are drawn in ``fields*.png`` (default:
    the highest).
    """

    methods: list[str] = Field(default_factory=lambda: ["all"], min_length=1)
    ratios: list[float] = Field(default_factory=lambda: [0.5, 0.8, 0.9], min_length=1)
    scope: Literal["global", "layer"] = "global"
    options: dict[str, dict] = Field(default_factory=dict)
    compensate: list[str] = Field(default_factory=list)
    no_compensate: list[str] = Field(default_factory=list)
    snapshot_ratio: Optional[float] = None

    @property
    def variants(self) -> list[tuple[str, str, Optional[bool]]]:
        """(label, method, compensate) for every run of a ratio: plain methods, then the variants."""
        out = [(m, m, None) for m in self.methods]
        out += [(f"{m}+shift", m, True) for m in self.compensate]
        out += [(f"{m}-noshift", m, False) for m in self.no_compensate]
        return out

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, v):
        bad = [r for r in v if not (0 <= r < 1)]
        if bad:
            raise ValueError(f"ratios must be in [0, 1) (the fraction of weights removed), got {bad}")
        return sorted(set(v))

    @field_validator("methods")
    @classmethod
    def _methods(cls, v):
        from .criteria import available

        known = available()
        if v == ["all"]:
            return known
        unknown = [m for m in v if m not in known]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; available: {known} or ['all']")
        return v

    @model_validator(mode="after")
    def _options(self):
        from .criteria import available

        listed = set(self.methods) | set(self.compensate) | set(self.no_compensate)
        unknown = [m for m in self.options if m not in listed]
        if unknown:
            raise ValueError(f"prune.options names method(s) {unknown} that are not run by this case")
        bad = [m for m in self.compensate + self.no_compensate if m not in available()]
        if bad:
            raise ValueError(f"unknown method(s) {bad} in prune.compensate / prune.no_compensate; available: {available()}")
        if self.snapshot_ratio is not None and self.snapshot_ratio not in self.ratios:
            raise ValueError(f"prune.snapshot_ratio = {self.snapshot_ratio} is not one of prune.ratios {self.ratios}")
        return self


class BaselineSpec(_Frozen):
    """``scratch = true``: for every ratio, also train from scratch a dense network of the same depth
    whose widths are scaled so that it has (about) as many weights as the pruned one keeps."""

    scratch: bool = False


class Case(_Frozen):
    """A whole study: data, noise, model, training, pruning, fine-tuning, seeds and output."""

    name: str = "case"
    output: str = "runs/case"
    device: str = "cpu"
    dtype: Literal["float32", "float64"] = "float32"
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    data: DataSpec = Field(default_factory=lambda: DataSpec(kind="classification"))
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    architectures: dict[str, ModelSpec] = Field(default_factory=dict)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    finetune: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=200))
    save_models: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if v != "cpu" and not v.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {v!r}")
        return v

    @property
    def models(self) -> dict[str, ModelSpec]:
        """The architectures of the study by name: ``[architectures.NAME]`` tables, or ``[model]``."""
        return dict(self.architectures) if self.architectures else {"model": self.model}

    @model_validator(mode="after")
    def _check(self):
        if self.architectures and "model" in self.model_fields_set:
            raise ValueError("give either [model] or [architectures.NAME] tables, not both")
        if self.data.kind == "classification" and self.noise.levels != [0.0] and self.noise.kind != "none":
            raise ValueError("noise applies to regression targets only; for classification use noise.levels = [0.0]")
        return self


def _format_error(source: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"{source}: {loc}: {msg}")
    return "; ".join(lines)


def parse_case(raw: dict, *, source: str = "<case>") -> Case:
    """Validate a case dictionary; raise :class:`ConfigError` naming each bad key."""
    try:
        return Case.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None


def load_case(path: str | Path, overrides: dict | None = None) -> Case:
    """Read and validate a TOML case file. ``overrides`` (dotted keys) replace values before checks."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such case file")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    for key, value in (overrides or {}).items():
        node = raw
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return parse_case(raw, source=str(path))
