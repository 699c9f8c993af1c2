"""A study's scoring cache: each method scores a dense network once, its variants share the scores.

A study prunes one dense network with several methods, each with and without elimination-compensation
shifts, at several ratios, and possibly one method with several criterion options (procedures with
``options``). :class:`Planner` scores it once per (method, options) (:func:`sciprune.plan`) and
derives the variants from those scores (a joint criterion's plan, e.g. ``obs-layer``'s, holds its
costly part, the layer Hessians and their inverses, and solves each ratio from it); the study procedure
(:mod:`sciprune.engine`), behind both ``sciprune run`` and ``sciprune sweep``, uses it for the first step
of every schedule. It is study orchestration, not a library entry point, hence its own module.
"""

from __future__ import annotations

from dataclasses import replace

import json

import torch
from torch import nn

from .checks import check_seed
from .errors import SciPruneError
from .pruning import PrunePlan, _check_model, ec_shifts, plan
from .solutions import masks_only

__all__ = ["Planner"]


def _options_key(options: dict) -> str:
    """A canonical, hashable form of criterion options (equal dicts give equal keys)."""
    return json.dumps(options, sort_keys=True, default=repr)


class Planner:
    """Plans for one model, each (method, options) scored once: ``planner(method, compensate, options)`` ->
    :class:`PrunePlan`.

    The variants of a method share its scores: ``compensate=False`` drops its shifts, ``True`` adds the
    elimination-compensation shifts of the model (computed once, for all methods) when it has none. A
    joint criterion compensates by its own updates: ``False`` keeps its masks only, ``True`` is its own.
    ``options`` maps a method to its criterion options, used when a call gives none (a procedure's own
    ``options`` are passed per call and cached apart). Used by ``sciprune run`` and ``sciprune sweep``.
    """

    def __init__(self, model: nn.Module, data, *, seed: int = 0, options: dict[str, dict] | None = None) -> None:
        _check_model(model)
        self.model, self.data, self.seed, self.options = model, data, check_seed(seed), dict(options or {})
        self._plans: dict[tuple[str, str], PrunePlan] = {}
        self._ec_shifts: dict[str, torch.Tensor] | None = None

    def __call__(self, method: str, compensate: bool | None = None, options: dict | None = None) -> PrunePlan:
        """The plan of ``method`` with ``options`` (None: ``self.options[method]``), scored on first use."""
        if compensate is not None and not isinstance(compensate, bool):
            raise SciPruneError(f"compensate must be None (the criterion's own), True or False, got {compensate!r}")
        opts = dict(self.options.get(method, {}) if options is None else options)
        key = (method, _options_key(opts))
        if key not in self._plans:
            self._plans[key] = plan(self.model, method, self.data, seed=self.seed, **opts)
        base = self._plans[key]
        if compensate is False:
            return replace(base, shifts=None, solve=masks_only(base.solve))
        if compensate is True and not base.shifts and base.solve is None:
            if self._ec_shifts is None:
                self._ec_shifts = ec_shifts(self.model, self.data, seed=self.seed)
            return replace(base, shifts=self._ec_shifts)
        return base
