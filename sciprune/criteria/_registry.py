"""The registry of pruning criteria: one module per method registers one :class:`Criterion`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import SciPruneError

__all__ = ["Criterion", "ScoreResult", "register", "get", "available"]


@dataclass(frozen=True)
class ScoreResult:
    """What a criterion returns.

    ``scores``: name -> importance tensor shaped like the weight (higher = keep).
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
    model, its training mode, or any ``.grad``.
    """

    name: str
    summary: str
    compute: Callable[..., ScoreResult]
    needs_data: bool
    options: dict[str, str] = field(default_factory=dict)


_REGISTRY: dict[str, Criterion] = {}


def register(name: str, *, summary: str, needs_data: bool, options: dict[str, str] | None = None):
    """Decorator registering ``compute`` under ``name``."""

    def deco(fn: Callable[..., ScoreResult]) -> Callable[..., ScoreResult]:
        if name in _REGISTRY:
            raise RuntimeError(f"criterion {name!r} registered twice")
        _REGISTRY[name] = Criterion(name, summary, fn, needs_data, dict(options or {}))
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


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def _load_all() -> None:
    """Import every module of this package once, so that adding a criterion is adding a module."""
    import importlib
    import pkgutil

    from .. import criteria as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
