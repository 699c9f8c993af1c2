"""Pruning criteria. Each module registers one method with :func:`register` (and, optionally, its
batched ensemble path with :func:`register_batched`); see ``_registry``."""

from ._registry import (
    GRANULARITIES,
    Criterion,
    Resident,
    ScoreResult,
    Stacked,
    available,
    get,
    granularity_of,
    register,
    register_batched,
)

__all__ = ["Criterion", "ScoreResult", "GRANULARITIES", "Resident", "Stacked", "available", "get",
           "granularity_of", "register", "register_batched"]
