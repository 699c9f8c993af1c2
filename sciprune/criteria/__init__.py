"""Pruning criteria. Each module registers one method with :func:`register`; see ``_registry``."""

from ._registry import GRANULARITIES, Criterion, ScoreResult, available, get, granularity_of, register

__all__ = ["Criterion", "ScoreResult", "GRANULARITIES", "available", "get", "granularity_of", "register"]
