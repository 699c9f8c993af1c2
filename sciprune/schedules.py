"""Pruning schedules as data: how a target sparsity is reached, as a list of per-step sparsities.

A schedule is a small frozen, validated object. ``schedule.targets(p)`` lists the sparsity (fraction
of prunable weights removed) after each pruning step; the list is non-decreasing, every entry is in
[0, p] and the last one is ``p`` exactly. ``to_dict`` / :func:`parse_schedule` turn a schedule into a
flat dict (for results attributes and case files) and back.

- :class:`OneShot`: one step to the target (the default).
- :class:`MultiStep`: ``steps`` steps with no training between them, the criterion re-evaluated at
  the partly pruned network (locality, Laurent et al. 2020); linear: s_k = p k / n; geometric: the
  kept fraction after step k is (1 - p)^(k/n) (their ``--exp``).
- :class:`Iterative`: prune, retrain, repeat (Frankle & Carbin 2019, open_lth): each level removes
  ``fraction`` of the remaining weights, or an explicit list of levels.
- :class:`Cubic`: s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 for t0 <= t <= t0 + n dt, masks
  updated every dt optimiser steps during training (Zhu & Gupta 2017).
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, fields
from typing import ClassVar, Union

from .errors import SciPruneError

__all__ = ["OneShot", "MultiStep", "Iterative", "Cubic", "Schedule", "SCHEDULES", "parse_schedule", "check_target",
           "check_keep_steps", "kept_steps"]

SPACINGS = ("linear", "geometric")
#: The most levels an iterative schedule may have (each one is a full retraining).
MAX_LEVELS = 10_000


def _number(value, what: str, expected: str) -> float:
    """``value`` as a finite float, or a one-line error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SciPruneError(f"{what} must be {expected}, got {value!r}")
    return float(value)


def _fraction(value, what: str, *, low_open: bool = False) -> float:
    """A finite number in [0, 1) (or (0, 1) when ``low_open``)."""
    interval = "(0, 1)" if low_open else "[0, 1)"
    v = _number(value, what, f"a number in {interval}")
    if not ((0.0 < v) if low_open else (0.0 <= v)) or not v < 1.0:
        raise SciPruneError(f"{what} must be a number in {interval}, got {value!r}")
    return v


def _int(value, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SciPruneError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return value


def check_target(target) -> float:
    """The target sparsity: the fraction of prunable weights removed at the end, in [0, 1)."""
    return _fraction(target, "target (the final sparsity)")


def _monotone(values: list[float], target: float) -> list[float]:
    """Clip float noise: every entry in [previous, target], the last exactly ``target``."""
    out, prev = [], 0.0
    for v in values[:-1]:
        prev = min(max(v, prev), target)
        out.append(prev)
    return out + [target]


class _Base:
    """What every schedule provides; subclasses are frozen dataclasses."""

    name: ClassVar[str]
    #: True when the schedule needs training between (or during) its steps.
    needs_training: ClassVar[bool] = False

    def targets(self, target: float) -> list[float]:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self) -> dict:
        """``{"kind": name, field: value, ...}`` with unset (None) fields left out; tuples as lists."""
        out: dict = {"kind": self.name}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if v is not None:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Schedule":
        """The schedule of ``d`` (see :func:`parse_schedule`); its kind must be this class's."""
        s = parse_schedule(d)
        if not isinstance(s, cls):
            raise SciPruneError(f"schedule kind must be {cls.name!r} here, got {s.name!r}")
        return s


@dataclass(frozen=True)
class OneShot(_Base):
    """One step to the target: ``targets(p) == [p]``."""

    name: ClassVar[str] = "one-shot"

    def targets(self, target: float) -> list[float]:
        return [check_target(target)]


@dataclass(frozen=True)
class MultiStep(_Base):
    """``steps`` pruning steps with no training between them (Laurent et al. 2020).

    linear: s_k = p k / n; geometric: 1 - s_k = (1 - p)^(k/n), each step removing the same share of
    what remains (``--exp`` in Thrandis/loss-models-pruning).
    """

    steps: int
    spacing: str = "linear"
    name: ClassVar[str] = "multi-step"

    def __post_init__(self) -> None:
        _int(self.steps, "schedule steps", 1)
        if self.spacing not in SPACINGS:
            raise SciPruneError(f"schedule spacing must be one of {list(SPACINGS)}, got {self.spacing!r}")

    def targets(self, target: float) -> list[float]:
        p, n = check_target(target), self.steps
        if self.spacing == "linear":
            raw = [p * k / n for k in range(1, n + 1)]
        else:
            raw = [1.0 - (1.0 - p) ** (k / n) for k in range(1, n + 1)]
        return _monotone(raw, p)


@dataclass(frozen=True, kw_only=True)
class Iterative(_Base):
    """Prune-retrain levels (lottery tickets, Frankle & Carbin 2019; open_lth).

    Exactly one of ``fraction`` (each level removes that share of the remaining weights: level k
    reaches 1 - (1 - f)^k, and the last level the target) and ``levels`` (a strictly increasing list
    of level sparsities; the levels below the target are used, then the target). ``budget_epochs`` is
    the training between levels, done by the caller.
    """

    fraction: float | None = None
    levels: tuple[float, ...] | None = None
    budget_epochs: int
    name: ClassVar[str] = "iterative"
    needs_training: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.levels is None):
            raise SciPruneError("schedule iterative needs exactly one of fraction (share of the remaining weights "
                                f"per level) and levels (a list of level sparsities), got fraction={self.fraction!r}, "
                                f"levels={self.levels!r}")
        if self.fraction is not None:
            object.__setattr__(self, "fraction", _fraction(self.fraction, "schedule fraction", low_open=True))
        if self.levels is not None:
            lv = self.levels
            if isinstance(lv, (str, bytes)) or not isinstance(lv, (list, tuple)) or not lv:
                raise SciPruneError(f"schedule levels must be a non-empty list of sparsities in [0, 1), got {lv!r}")
            lv = tuple(_fraction(t, "schedule levels entry") for t in lv)
            if any(b <= a for a, b in zip(lv, lv[1:])):
                raise SciPruneError(f"schedule levels must be strictly increasing, got {list(lv)}")
            object.__setattr__(self, "levels", lv)
        _int(self.budget_epochs, "schedule budget_epochs", 0)

    def targets(self, target: float, *, total: int | None = None) -> list[float]:
        """Per-level sparsities. With ``fraction`` and ``total`` (the number of weights in the ranking
        pool), the open_lth count rule: each level removes ceil(f * remaining) weights, and the
        returned sparsities are those counts over ``total`` (so the rounding rule of
        :mod:`sciprune.selection` prunes exactly those counts); the last level is the target."""
        p = check_target(target)
        if self.levels is not None:
            return [t for t in self.levels if t < p] + [p]
        f = self.fraction
        needed = math.ceil(math.log1p(-p) / math.log1p(-f)) if p > 0 else 0
        if needed > MAX_LEVELS:
            raise SciPruneError(f"schedule fraction {f!r} needs {needed} levels to reach the target {p!r}; at most "
                                f"{MAX_LEVELS}: use a larger fraction")
        if total is not None:
            total = _int(total, "total (the number of prunable weights)", 1)
            final = math.floor(p * total + 0.5)  # the count selection prunes at p
            counts, pruned = [], 0
            while True:
                pruned += math.ceil(f * (total - pruned))
                if pruned >= final:
                    break
                counts.append(pruned)
            return [c / total for c in counts] + [p]
        levels, k = [], 1
        while True:
            s = 1.0 - (1.0 - f) ** k
            if s >= p - 1e-12:  # within rounding of the target: that level is the target itself
                break
            levels.append(s)
            k += 1
        return levels + [p]


@dataclass(frozen=True, kw_only=True)
class Cubic(_Base):
    """Gradual pruning during training (Zhu & Gupta 2017, "To prune, or not to prune").

    s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3 for t0 <= t <= t0 + n dt; s_i before t0 and s_f
    after. Masks are updated at the n + 1 optimiser steps t0, t0 + dt, ..., t0 + n dt. ``final``
    None means the target of the run (:meth:`resolve`).
    """

    initial: float = 0.0
    final: float | None = None
    start_step: int = 0
    n_updates: int
    every: int
    name: ClassVar[str] = "cubic"
    needs_training: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _fraction(self.initial, "schedule initial (sparsity s_i)")
        if self.final is not None:
            _fraction(self.final, "schedule final (sparsity s_f)")
            if self.final < self.initial:
                raise SciPruneError(f"schedule final ({self.final!r}) must be >= initial ({self.initial!r})")
        _int(self.start_step, "schedule start_step (t0)", 0)
        _int(self.n_updates, "schedule n_updates (n)", 1)
        _int(self.every, "schedule every (dt, optimiser steps between mask updates)", 1)
        object.__setattr__(self, "initial", float(self.initial))
        if self.final is not None:
            object.__setattr__(self, "final", float(self.final))

    def resolve(self, target: float) -> "Cubic":
        """This schedule with ``final`` set to ``target`` (which must equal ``final`` if it is set)."""
        p = check_target(target)
        if self.final is not None and self.final != p:
            raise SciPruneError(f"schedule final ({self.final!r}) differs from the target ({target!r}); leave final unset")
        if p < self.initial:
            raise SciPruneError(f"target ({target!r}) must be >= the schedule's initial sparsity ({self.initial!r})")
        return Cubic(initial=self.initial, final=p, start_step=self.start_step, n_updates=self.n_updates,
                     every=self.every)

    def update_steps(self) -> list[int]:
        """The optimiser steps t0 + k dt, k = 0..n, at which the masks are updated."""
        return [self.start_step + k * self.every for k in range(self.n_updates + 1)]

    def sparsity_at(self, step: int) -> float:
        """s_t of the closed form at optimiser step ``step`` (clamped to [t0, t0 + n dt])."""
        if self.final is None:
            raise SciPruneError("schedule final is not set: pass final= or call resolve(target) first")
        step = _int(step, "step", 0)
        t0, span = self.start_step, self.n_updates * self.every
        if step <= t0:
            return self.initial
        if step >= t0 + span:
            return self.final
        return self.final + (self.initial - self.final) * (1.0 - (step - t0) / span) ** 3

    def targets(self, target: float) -> list[float]:
        """s_t at each of :meth:`update_steps` for s_f = ``target``; the last is the target exactly."""
        s = self.resolve(target)
        return _monotone([s.sparsity_at(t) for t in s.update_steps()], s.final)


KEEP_CHOICES = ("last", "all")


def check_keep_steps(keep) -> str | tuple[int, ...]:
    """``keep_steps``: ``"last"`` (only the final numbers, the default), ``"all"``, or a list of step
    numbers (from 1) to record; a one-line error otherwise."""
    if isinstance(keep, str):
        if keep in KEEP_CHOICES:
            return keep
    elif isinstance(keep, (list, tuple)) and keep and all(isinstance(k, int) and not isinstance(k, bool) and k >= 1
                                                           for k in keep):
        if len(set(keep)) == len(keep):
            return tuple(sorted(keep))
    raise SciPruneError(f"keep_steps must be 'last', 'all' or a list of distinct step numbers >= 1, got {keep!r}")


def kept_steps(keep, n: int) -> list[int]:
    """The 0-based indices of the steps of an n-step schedule that ``keep`` records."""
    if keep == "last":
        return []
    if keep == "all":
        return list(range(n))
    return [k - 1 for k in keep if k <= n]


Schedule = Union[OneShot, MultiStep, Iterative, Cubic]
SCHEDULES: dict[str, type] = {c.name: c for c in (OneShot, MultiStep, Iterative, Cubic)}


def parse_schedule(d) -> Schedule:
    """A schedule from a dict ``{"kind": ..., field: value}`` (a case file's table), a kind name, or a
    schedule (returned as is). Unknown kinds and keys are refused with one line."""
    if isinstance(d, tuple(SCHEDULES.values())):
        return d
    if isinstance(d, str):
        d = {"kind": d}
    if not isinstance(d, dict):
        raise SciPruneError(f"schedule must be a table with a kind (one of {list(SCHEDULES)}), got {d!r}")
    kind = d.get("kind")
    if kind not in SCHEDULES:
        raise SciPruneError(f"schedule kind must be one of {list(SCHEDULES)}, got {kind!r}")
    cls = SCHEDULES[kind]
    allowed = [f.name for f in fields(cls)]
    unknown = sorted(str(k) for k in d if k != "kind" and k not in allowed)
    if unknown:
        raise SciPruneError(f"unknown key(s) {unknown} for schedule {kind!r}; allowed: {', '.join(allowed) or 'none'}")
    kwargs = {k: v for k, v in d.items() if k != "kind"}
    try:
        return cls(**kwargs)
    except TypeError:  # a required field is missing
        missing = [k for k in _required(cls) if k not in kwargs]
        raise SciPruneError(f"schedule {kind!r} needs key(s) {missing}") from None


def _required(cls) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
