"""Case files (TOML) -> frozen, validated configuration objects.

Only this module and the CLI read case files. Every section rejects unknown keys; a bad value is a
:class:`~sciprune.errors.ConfigError` naming the file, the key path and what was expected. Every
value is checked when the case is loaded, before any data are generated or any network trained:
types (a case file is read strictly: ``epochs = "100"`` or ``lr = inf`` is refused), ranges, names
that become file names (:func:`sciprune.outputs.check_name`), layer sizes against the machine's memory
(:func:`sciprune.models.check_model_size`), and each method's ``prune.options`` through the same
:func:`sciprune.pruning.score_result` call a study makes, on a one-weight network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_serializer, model_validator

from ._case_sections import (  # noqa: F401  (re-exported: the case's data, model and training sections)
    MAX_NOISE_LEVEL,
    DataSpec,
    GenerateSpec,
    ModelSpec,
    NoiseSpec,
    TrainSpec,
    _Bad,
    _Frozen,
    _plain_path,
    _short,
)
from ._case_prune import DRY_RUN_PROBES, ProcedureSpec, PruneSpec  # noqa: F401  (re-exported)
from .checks import MAX_EPOCHS, SEED_LIMIT
from .errors import ConfigError, SciPruneError

__all__ = [
    "GenerateSpec", "DataSpec", "NoiseSpec", "ModelSpec", "TrainSpec", "PruneSpec", "BaselineSpec", "DiagnosticsSpec", "Case",
    "load_case", "parse_case", "MAX_EPOCHS", "MAX_NOISE_LEVEL", "SEED_LIMIT",
]

#: A case file is a few kB of TOML; anything larger than this is not one.
MAX_CASE_BYTES = 1 << 20
_DEVICE = re.compile(r"cpu|cuda(:(0|[1-9][0-9]{0,3}))?")

class DiagnosticsSpec(_Frozen):
    """``[diagnostics]``: measured on the dense and every final pruned network
    (:mod:`sciprune.study_diagnostics`). ``hessian_top``: that many top Hessian eigenvalues of the
    training loss (0: none); ``psp``: the PSP L2 norm per hidden layer, and the first- and second-order
    PSP-entropy for ReLU networks. ``lines``: pairs of variant labels ``[a, b]``: per ratio, the training
    and test loss along theta(alpha) = (1 - alpha) theta_a + alpha theta_b between their final networks
    (Goodfellow et al. 2015; Tartaglione et al. 2020, Fig. 2) at ``line_points`` values of alpha in [0, 1].
    ``kfac``: per Linear layer the K-FAC spectral radius lambda_max(A_l) lambda_max(G_l) (exact Fisher);
    ``inference``: the forward pass's wall-clock time per row, batch 1 and the whole test split."""

    hessian_top: int = Field(0, ge=0, le=50)
    psp: bool = False
    lines: list[Annotated[list[str], Field(min_length=2, max_length=2)]] = Field(default_factory=list)
    line_points: int = Field(21, ge=2, le=1001)
    kfac: bool = False
    inference: bool = False

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """Without ``kfac`` or ``inference`` when false, so that the sweep's results keys of studies that do
        not ask for them stay what they were."""
        out = handler(self)
        for key in ("kfac", "inference"):
            if not getattr(self, key):
                out.pop(key, None)
        return out

    @property
    def pairs(self) -> list[tuple[str, str]]:
        """``lines`` as (a, b) tuples."""
        return [(a, b) for a, b in self.lines]

    @property
    def enabled(self) -> bool:
        return bool(self.hessian_top or self.psp or self.kfac or self.inference)


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
    seeds: list[Annotated[int, Field(ge=0, lt=SEED_LIMIT)]] = Field(default_factory=lambda: [0], min_length=1)
    data: DataSpec = Field(default_factory=lambda: DataSpec(kind="classification"))
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    architectures: dict[str, ModelSpec] = Field(default_factory=dict)
    baseline: BaselineSpec = Field(default_factory=BaselineSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    prune: PruneSpec = Field(default_factory=PruneSpec)
    finetune: TrainSpec = Field(default_factory=lambda: TrainSpec(epochs=200))
    diagnostics: DiagnosticsSpec = Field(default_factory=DiagnosticsSpec)
    save_models: bool = True

    @field_validator("device")
    @classmethod
    def _device(cls, v):
        if not _DEVICE.fullmatch(v):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {_short(v)}")
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v):
        from .outputs import check_name

        return check_name(v, "the case name")

    @field_validator("output")
    @classmethod
    def _output(cls, v):
        return _plain_path(v, "output")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v):
        twice = sorted({s for s in v if v.count(s) > 1})
        if twice:
            raise ValueError(f"seeds must be distinct, got {twice} more than once")
        return v

    @field_validator("architectures")
    @classmethod
    def _architectures(cls, v):
        from .outputs import check_name

        for name in v:
            check_name(name, "an architecture name ([architectures.NAME])")
        return v

    @property
    def models(self) -> dict[str, ModelSpec]:
        """The architectures of the study by name: ``[architectures.NAME]`` tables, or ``[model]``."""
        return dict(self.architectures) if self.architectures else {"model": self.model}

    @model_validator(mode="after")
    def _check(self):
        if self.architectures and "model" in self.model_fields_set:
            raise ValueError("give either [model] or [architectures.NAME] tables, not both")
        labels = [label for label, _, _ in self.prune.variants]
        for a, b in self.diagnostics.pairs:
            bad = [x for x in (a, b) if x not in labels]
            if bad or a == b:
                raise _Bad("diagnostics.lines", f"a line joins two different variants of this case ({labels}); "
                                                f"got [{a!r}, {b!r}]")
        if len(set(self.diagnostics.pairs)) != len(self.diagnostics.pairs):
            raise _Bad("diagnostics.lines", "a pair is listed twice")
        if self.prune.schedule["kind"] == "cubic" and self.finetune.patience is not None:
            raise _Bad("finetune.patience", "the cubic schedule updates masks during the fine-tuning, which early "
                                            "stopping could end before its last update; unset finetune.patience")
        if self.data.kind == "classification" and self.noise.levels != [0.0] and self.noise.kind != "none":
            raise _Bad("noise.levels", "noise applies to regression targets only; for classification use "
                                       "noise.levels = [0.0]")
        self._check_sizes()
        self._check_neuron_ratios()
        return self

    def _check_neuron_ratios(self) -> None:
        """A neuron method's ratios are fractions of hidden neurons: one that would empty a hidden layer of
        some architecture (surely, from the widths alone: :func:`sciprune.neurons.check_neuron_ratio`) is
        refused here, before any data are made or any network trained."""
        from .criteria import granularity_of
        from .neurons import check_neuron_ratio

        if not any(granularity_of(m) == "neuron" for _, m, _ in self.prune.variants):
            return
        shifted = [m for m in self.prune.compensate if granularity_of(m) == "neuron"]
        if shifted:
            raise _Bad("prune.compensate", f"method(s) {shifted} remove whole neurons; elimination-compensation "
                                           "shifts are defined per weight: leave them out of prune.compensate")
        scopes = {}  # the scope each neuron variant ranks with: its rounds' own, else the study's
        for label, m, _ in self.prune.variants:
            if granularity_of(m) == "neuron":
                rounds = self.prune.procedure(label).rounds
                scopes.setdefault(self.prune.scope if rounds is None else rounds.get("scope", "global"), label)
        for name, spec in self.models.items():
            hidden = spec.sizes(1, 1)[1:-1]
            for scope, label in scopes.items():
                for ratio in self.prune.ratios:
                    try:
                        check_neuron_ratio(ratio, {f"hidden layer {i + 1} of {name}": w for i, w in enumerate(hidden)},
                                           scope=scope)
                    except SciPruneError as err:
                        raise _Bad("prune.ratios", f"{err} (variant {label!r})") from None

    def _check_sizes(self) -> None:
        """Every network fits in memory. Input and output sizes: (x, t) -> u for PDEBench, 8x8 digits
        -> 10 classes, else the smallest possible (1 input, 2 classes) since the data are not read here."""
        from .models import check_model_size

        features = {"pdebench": (2, 1), "classification": (64, 10) if self.data.source == "digits" else (1, 2)}
        n_in, n_out = features[self.data.kind]
        for name, spec in self.models.items():
            try:
                check_model_size(spec.sizes(n_in, n_out))
            except SciPruneError as err:
                raise _Bad(f"architectures.{name}.widths" if self.architectures else "model.widths", str(err)) from None


def _got(value: object) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return _short(value, 60)


_KEY_PART = re.compile(r"[A-Za-z0-9_+=-]{1,40}")


def _key(parts) -> str:
    return ".".join(str(p) if _KEY_PART.fullmatch(str(p)) else _short(str(p), 40) for p in parts)


def _format_error(source: str, err: ValidationError, *, limit: int = 3) -> str:
    lines = []
    errors = err.errors()
    for e in errors[:limit]:
        loc = list(e["loc"])
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, _Bad):
            loc += cause.key.split(".")
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] not in ("missing", "value_error"):
            msg += f", got {_got(e['input'])}"
        lines.append(f"{source}: {_key(loc)}: {msg}" if loc else f"{source}: {msg}")
    more = f" (and {len(errors) - limit} more)" if len(errors) > limit else ""
    return " ".join("; ".join(lines).split()) + more


def parse_case(raw: dict, *, source: str = "<case>") -> Case:
    """Validate a case dictionary; raise :class:`ConfigError` naming each bad key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a case must be a table of keys, got {type(raw).__name__}")
    try:
        return Case.model_validate(raw, strict=True)
    except ValidationError as err:
        raise ConfigError(_format_error(source, err)) from None
    except RecursionError:
        raise ConfigError(f"{source}: values are nested too deeply to be a case file") from None


def _read_text(path: Path) -> str:
    """The text of a case file, or a :class:`ConfigError` saying why it is not one."""
    if not path.exists():
        raise ConfigError(f"{path}: no such case file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a case file; give the path of a .toml file")
    if not path.is_file():
        raise ConfigError(f"{path}: is not a regular file (a pipe or device?); give the path of a .toml file")
    try:
        if path.stat().st_size > MAX_CASE_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is too large for a case file "
                              f"(at most {MAX_CASE_BYTES} bytes of TOML)")
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the case file: {err.strerror or err}") from None
    if b"\x00" in data:
        raise ConfigError(f"{path}: is a binary file (it contains NUL bytes), not a TOML case file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"{path}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8; "
                          "TOML case files must be UTF-8 text") from None


def _apply(raw: dict, overrides: dict, source: str) -> None:
    """Set dotted ``overrides`` keys in ``raw``."""
    for key, value in overrides.items():
        node = raw
        *parents, last = key.split(".")
        for i, p in enumerate(parents):
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {'.'.join(parents[: i + 1])}: must be a table to set {key}, "
                                  f"got {_got(node)}")
        node[last] = value


def load_case(path: str | Path, overrides: dict | None = None) -> Case:
    """Read and validate a TOML case file. ``overrides`` (dotted keys) replace values before checks."""
    if path is None or str(path) == "" or "\x00" in str(path):
        raise ConfigError(f"the case file must be a path, got {path!r}")
    path = Path(path)
    text = _read_text(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid TOML: values are nested too deeply") from None
    _apply(raw, overrides or {}, str(path))
    return parse_case(raw, source=str(path))
