"""The registry of pruning criteria: one module per method registers one :class:`Criterion`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import SciPruneError

__all__ = ["Criterion", "ScoreResult", "GRANULARITIES", "register", "get", "available", "granularity_of"]

#: What one score rates: one weight entry, or one hidden neuron (see :mod:`sciprune.neurons`).
GRANULARITIES = ("weight", "neuron")


@dataclass(frozen=True)
class ScoreResult:
    """What a criterion returns.

    ``scores``: name -> importance tensor shaped like the weight (higher = keep); for a criterion of
    granularity ``"neuron"``, name of the weight whose rows are the neurons -> ``(out_features,)``
    tensor, one score per hidden neuron (hidden layers only: never the output layer's rows).
    ``bias_shifts``: for compensating criteria, name of a weight -> tensor shaped like it holding
    the shift its removal asks of its row's bias (the bias of the same Linear layer); the pruner
    adds, for each bias entry, the shifts of the weights removed from its row.
    """

    scores: dict[str, torch.Tensor]
    bias_shifts: dict[str, torch.Tensor] | None = None


@dataclass(frozen=True)
class Criterion:
    """A named scoring rule.

    ``compute(model, batches, names, generator, **options) -> ScoreResult``; ``batches`` is a
    :class:`~sciprune.batches.Batches` or None when ``needs_data`` is False. It must not change the
    model, its training mode, or any ``.grad``. ``granularity``: ``"weight"`` (one score per weight
    entry, the default) or ``"neuron"`` (one per hidden neuron; ``names`` are then the hidden layers'
    weights and selection removes whole neurons, :mod:`sciprune.neurons`).
    """

    name: str
    summary: str
    compute: Callable[..., ScoreResult]
    needs_data: bool
    options: dict[str, str] = field(default_factory=dict)
    granularity: str = "weight"


_REGISTRY: dict[str, Criterion] = {}


def register(name: str, *, summary: str, needs_data: bool, options: dict[str, str] | None = None,
             granularity: str = "weight"):
    """Decorator registering ``compute`` under ``name``; ``granularity`` is ``"weight"`` or ``"neuron"``."""
    if not isinstance(granularity, str) or granularity not in GRANULARITIES:
        raise SciPruneError(f"criterion {name!r}: granularity must be one of {GRANULARITIES}, got {granularity!r}")

    def deco(fn: Callable[..., ScoreResult]) -> Callable[..., ScoreResult]:
        if name in _REGISTRY:
            raise RuntimeError(f"criterion {name!r} registered twice")
        _REGISTRY[name] = Criterion(name, summary, fn, needs_data, dict(options or {}), granularity)
        return fn

    return deco


def get(name: str) -> Criterion:
    _load_all()
    if not isinstance(name, str):
        raise SciPruneError(f"method must be a name (str), one of {', '.join(available())}; got {name!r}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SciPruneError(f"unknown method {name!r}; available: {', '.join(available())}") from None


def granularity_of(name) -> str:
    """The granularity of registered criterion ``name``; ``"weight"`` for anything not registered (an
    unknown name is refused where it is scored)."""
    _load_all()
    crit = _REGISTRY.get(name) if isinstance(name, str) else None
    return crit.granularity if crit is not None else "weight"


def available(granularity: str | None = None) -> list[str]:
    """Names of the registered criteria, sorted; only those of ``granularity`` (``"weight"`` or
    ``"neuron"``) when given. A study's ``methods = ["all"]`` means the weight criteria: its ratios are
    fractions of weights, and a neuron criterion's ratio is a fraction of neurons."""
    _load_all()
    if granularity is not None and granularity not in GRANULARITIES:
        raise SciPruneError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return sorted(n for n, c in _REGISTRY.items() if granularity is None or c.granularity == granularity)


def _load_all() -> None:
    """Import every module of this package once, so that adding a criterion is adding a module."""
    import importlib
    import pkgutil

    from .. import criteria as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
