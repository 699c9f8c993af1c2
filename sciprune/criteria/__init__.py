"""Pruning criteria. Each module registers one method with :func:`register`; see ``_registry``."""

from ._registry import Criterion, ScoreResult, available, get, register

__all__ = ["Criterion", "ScoreResult", "available", "get", "register"]
