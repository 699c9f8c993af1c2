"""The sections of a case file that describe the data, the network and its training.

:class:`GenerateSpec`, :class:`DataSpec`, :class:`NoiseSpec`, :class:`ModelSpec`, :class:`TrainSpec`
and what every section shares (strict, frozen, unknown keys refused; :class:`_Bad` for a failed check
at a key). The pruning sections, the whole :class:`~sciprune.config.Case` and the loading of case files
are in :mod:`sciprune.config`, which re-exports these.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .checks import MAX_EPOCHS, MAX_WORKERS
from .errors import SciPruneError

#: Largest mini-batch: torch indexes a batch with 32-bit sizes in places.
MAX_BATCH = 2**31 - 1
#: Largest noise level (absolute, or relative for ``relative-gaussian``). Squares of noise of this
#: size, summed over 10^8 points, stay inside float32 (3.4e38), the narrowest dtype a study trains
#: and scores in; larger levels overflow the target scaling and the squared errors to inf.
MAX_NOISE_LEVEL = 1e15
#: Most samples ``[data.generate]`` may ask for (PDEBench's own files hold 10^4).
MAX_SAMPLES = 10**6
#: Bytes per grid point while a generated field is solved, noised, split and held for training
#: (field, noisy copy, two coordinates, indices: 8 float64-sized arrays, a generous estimate).
GRID_BYTES_PER_POINT = 64
#: Grids up to this many points have their split made at load time (milliseconds); the loader checks
#: larger ones, and files that already exist, when it splits them.
SPLIT_CHECK_POINTS = 10**7
class _Bad(ValueError):
    """A failed check at ``key`` (a dotted path below the model being validated)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, allow_inf_nan=False)


Epochs = Annotated[int, Field(ge=1, le=MAX_EPOCHS)]


def _plain_path(value: Optional[str], what: str) -> Optional[str]:
    if value is not None and (value == "" or "\x00" in value):
        raise ValueError(f"{what} must be a non-empty path without NUL bytes, got {value!r}")
    return value


class GenerateSpec(_Frozen):
    """How to make a missing diffusion-sorption file (``sciprune generate diffusion-sorption``)."""

    samples: int = Field(1, ge=1, le=MAX_SAMPLES)
    nx: int = Field(256, ge=3)
    nt: int = Field(101, ge=2)
    mode: Literal["accurate", "pdebench"] = "accurate"
    workers: Optional[int] = Field(None, ge=1, le=MAX_WORKERS)

    @model_validator(mode="after")
    def _memory(self):
        from .checks import memory_bytes

        need, have = self.nx * self.nt * GRID_BYTES_PER_POINT, memory_bytes()
        if have and need > have:
            raise ValueError(f"a grid of nx = {self.nx} by nt = {self.nt} points needs about {need / 2**30:.1f} GiB, "
                             f"more than this machine's {have / 2**30:.1f} GiB; use a smaller grid")
        return self


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

    @field_validator("file", "source")
    @classmethod
    def _paths(cls, v, info):
        return _plain_path(v, f"data.{info.field_name}")

    @model_validator(mode="after")
    def _check(self):
        if self.kind == "pdebench" and not self.file:
            raise ValueError("data.file is required when data.kind = 'pdebench'")
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError("data.test_fraction + data.val_fraction must be < 1")
        g = self.generate
        if g is not None and self.sample >= g.samples:
            raise _Bad("sample", f"data.sample = {self.sample} is not one of the {g.samples} sample(s) that "
                                 "[data.generate] makes; lower data.sample or raise data.generate.samples")
        if self.kind == "pdebench" and g is not None and g.nx * g.nt <= SPLIT_CHECK_POINTS \
                and not Path(self.file).exists():
            self._check_split(g.nx, g.nt)
        return self

    def _check_split(self, nx: int, nt: int) -> None:
        """The split of the grid that will be generated, made by the loader's own function."""
        import numpy as np

        from .data.coords import split_indices

        try:
            parts, _ = split_indices(np.arange(float(nt)), nx, split=self.split, test_fraction=self.test_fraction,
                                     val_fraction=self.val_fraction)
        except SciPruneError as err:
            raise _Bad("test_fraction", f"on the generated {nx} x {nt} grid: {err}") from None
        if len(parts["test"]) == 0:
            raise _Bad("test_fraction", f"test_fraction = {self.test_fraction} leaves no test point of the "
                                        f"{nx * nt} of the generated grid; raise it")


class NoiseSpec(_Frozen):
    """Noise added to regression targets: one run per level (a = half-width for ``uniform``)."""

    kind: Literal["none", "uniform", "gaussian", "relative-gaussian"] = "uniform"
    levels: list[Annotated[float, Field(ge=0, le=MAX_NOISE_LEVEL)]] = Field(default_factory=lambda: [0.0], min_length=1)

    @field_validator("levels")
    @classmethod
    def _levels(cls, v):
        if len(set(v)) != len(v):
            raise ValueError(f"noise levels must be distinct, got {v}")
        return v

    @model_validator(mode="after")
    def _laws(self):
        from .data.noise import NoiseModel

        for i, level in enumerate(self.levels):
            try:
                NoiseModel(self.kind, level)  # the law each run uses, checked now
            except SciPruneError as err:
                raise _Bad(f"levels.{i}", str(err)) from None
        return self


class ModelSpec(_Frozen):
    """A fully-connected network: ``widths`` of the hidden layers and one activation."""

    kind: Literal["mlp", "lenet-300-100"] = "mlp"
    widths: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [40] * 6)
    activation: Literal["tanh", "relu", "gelu", "sin"] = "tanh"

    @model_validator(mode="after")
    def _fixed(self):
        given = [k for k in ("widths", "activation") if k in self.model_fields_set]
        if self.kind == "lenet-300-100" and given:
            raise _Bad(given[0], "lenet-300-100 has fixed widths [300, 100] and relu; remove "
                                 f"{' and '.join(given)} or use kind = 'mlp'")
        return self

    def sizes(self, in_features: int, out_features: int) -> list[int]:
        """Layer sizes of this network for a task's input and output sizes."""
        hidden = [300, 100] if self.kind == "lenet-300-100" else list(self.widths)
        return [in_features, *hidden, out_features]


class TrainSpec(_Frozen):
    """Optimiser settings (see :class:`sciprune.training.TrainConfig`)."""

    optimizer: Literal["adam", "adamw", "sgd", "lbfgs"] = "adam"
    lr: float = Field(1e-3, gt=0)
    epochs: int = Field(1000, ge=0, le=MAX_EPOCHS)
    batch_size: Optional[int] = Field(None, ge=1, le=MAX_BATCH)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)
    lr_schedule: Literal["constant", "cosine", "step", "plateau"] = "constant"
    step_size: Epochs = 100
    gamma: float = Field(0.5, gt=0, lt=1)
    patience: Optional[Epochs] = None
    eval_every: Epochs = 1

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "schedule" in data:
            raise ValueError("'schedule' was renamed 'lr_schedule' (the learning-rate schedule); "
                             f"write lr_schedule = {data['schedule']!r}")
        return data

    @model_validator(mode="after")
    def _trainable(self):
        from .training import TrainConfig

        try:
            TrainConfig(**self.model_dump(), seed=0)  # what the pipeline builds from it
        except SciPruneError as err:
            raise ValueError(str(err)) from None
        return self


def _short(value: object, limit: int = 80) -> str:
    """A repr (or message) cut to ``limit`` characters, safe for any value."""
    try:
        text = value if isinstance(value, BaseException) else repr(value)
        text = str(text)
    except Exception:  # RecursionError for deeply nested values
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
