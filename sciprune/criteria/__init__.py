"""Pruning criteria. Each module registers one method with :func:`register` (and, optionally, its
batched ensemble path with :func:`register_batched`); see ``_registry``. A joint criterion
(``register(..., joint=True)``) returns a :data:`Solver` of masks and parameter updates with its scores."""

from ._registry import (
    GRANULARITIES,
    Criterion,
    Resident,
    ScoreResult,
    Solution,
    Solver,
    Stacked,
    all_methods,
    available,
    get,
    granularity_of,
    is_joint,
    register,
    register_batched,
)

__all__ = ["Criterion", "ScoreResult", "Solution", "Solver", "GRANULARITIES", "Resident", "Stacked", "available",
           "all_methods", "get", "granularity_of", "is_joint", "register", "register_batched"]
