"""The registry of pruning criteria: one module per method registers one :class:`Criterion`.

Most criteria score, and selection chooses by the scores. A *joint* criterion (``register(...,
joint=True)``; Optimal Brain Surgeon) chooses and compensates together: its result also holds a
solver, ``solve(ratio, scope) -> Solution`` (keep-masks and parameter updates at a ratio), which
:func:`sciprune.apply_plan` applies by the same one step as the masks and bias shifts of the others.

A criterion may also register a batched implementation (:func:`register_batched`): the scores of M
same-shaped members at once, used by :func:`sciprune.ensemble.score_ensemble`; without one (or when
it declines) the members are scored one by one with ``compute``.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator, NamedTuple

import torch
from torch import nn

from ..errors import SciPruneError

__all__ = ["Criterion", "ScoreResult", "Solution", "Solver", "GRANULARITIES", "Resident", "Stacked", "register",
           "register_batched", "get", "available", "granularity_of", "is_joint", "all_methods",
           "restoring_registry"]

#: What one score rates: one weight entry, or one hidden neuron (see :mod:`sciprune.neurons`).
GRANULARITIES = ("weight", "neuron")


class Solution(NamedTuple):
    """What pruning at one ratio does to a model: ``keep`` (weight name -> keep-mask, True = kept, for
    every scored weight) and ``updates`` (parameter name -> delta shaped like it, float64), added to the
    parameters before the masks are set (:func:`sciprune.apply_plan`)."""

    keep: dict[str, torch.Tensor]
    updates: dict[str, torch.Tensor]


#: A joint criterion's solver: ``solve(ratio, scope) -> Solution`` for the model it was computed on.
Solver = Callable[[float, str], Solution]


@dataclass(frozen=True)
class ScoreResult:
    """What a criterion returns.

    ``scores``: name -> importance tensor shaped like the weight (higher = keep); for a criterion of
    granularity ``"neuron"``, name of the weight whose rows are the neurons -> ``(out_features,)``
    tensor, one score per hidden neuron (hidden layers only: never the output layer's rows).
    ``bias_shifts``: for compensating criteria, name of a weight -> tensor shaped like it holding
    the shift its removal asks of its row's bias (the bias of the same Linear layer); the pruner
    adds, for each bias entry, the shifts of the weights removed from its row.
    ``solve``: for a joint criterion (and only there), its :data:`Solver`: the keep-masks of the scored
    weights at ``ratio`` and ``scope`` (the rounding rule and masks-only-shrink rule of
    :mod:`sciprune.selection`: exactly ``floor(ratio * n + 0.5)`` of the pool pruned, already-pruned
    ones included and kept pruned) with the updates of any parameters that go with them. It is made
    once (holding whatever is costly) and called for every ratio; it must not change the model. A joint
    criterion's ``scores`` are informative (they are not what chooses) and it has no ``bias_shifts``.
    """

    scores: dict[str, torch.Tensor]
    bias_shifts: dict[str, torch.Tensor] | None = None
    solve: Solver | None = None


@dataclass(frozen=True)
class Criterion:
    """A named scoring rule.

    ``compute(model, batches, names, generator, **options) -> ScoreResult``; ``batches`` is a
    :class:`~sciprune.batches.Batches` or None when ``needs_data`` is False. It must not change the
    model, its training mode, or any ``.grad``. ``granularity``: ``"weight"`` (one score per weight
    entry, the default) or ``"neuron"`` (one per hidden neuron; ``names`` are then the hidden layers'
    weights and selection removes whole neurons, :mod:`sciprune.neurons`). ``joint``: ``compute``
    returns a :class:`ScoreResult` with a solver (``solve``) that chooses the masks and the parameter
    updates together (weight granularity only). ``in_all``: part of a study's ``methods = ["all"]``
    (False for a method whose cost limits the networks it takes). ``check_network(model, options)``:
    raises a one-line :class:`SciPruneError` when the method cannot prune a network of ``model``'s
    architecture with ``options`` (run at case load on the untrained network, before any training).
    """

    name: str
    summary: str
    compute: Callable[..., ScoreResult]
    needs_data: bool
    options: dict[str, str] = field(default_factory=dict)
    granularity: str = "weight"
    batched: Callable[..., ScoreResult | None] | None = None
    joint: bool = False
    in_all: bool = True
    check_network: Callable[[nn.Module, dict], None] | None = None


class Resident(NamedTuple):
    """The members' training data as tensors on the models' device and dtype, for a batched pass.

    ``X``: ``(N, in)`` shared by every member (``x_shared``) or ``(M, N, in)`` one per member; ``Y``
    likewise ``(N, out)``/``(N,)`` integer labels or ``(M, N, ...)``; ``N`` rows for every member.
    """

    X: torch.Tensor
    x_shared: bool
    Y: torch.Tensor
    y_shared: bool
    N: int


@dataclass(frozen=True)
class Stacked:
    """What a batched implementation receives: M members of one plain chain (``nn.Sequential`` of
    Linear layers and elementwise activations, :func:`sciprune.ensemble.is_plain_chain`).

    ``template``: member 0 (the architecture; its parameters are not the members'). ``params``:
    ``{name: (M, *shape)}`` copies of every member's parameters (:func:`sciprune.ensemble.stack_models`,
    masked entries are zero). ``names``: the weights to score (validated; for a neuron criterion the
    hidden layers' weights). ``data``: :class:`Resident`, or None when the criterion needs no data and
    none was given. ``seeds``: member m's seed (the loop seeds member m's generator with it).
    ``batch_size``: rows per chunk at most, or None.
    """

    template: nn.Module
    params: dict[str, torch.Tensor]
    names: list[str]
    data: Resident | None
    seeds: list[int]
    batch_size: int | None

    @property
    def M(self) -> int:
        """The number of members."""
        return len(self.seeds)


_REGISTRY: dict[str, Criterion] = {}


def register(name: str, *, summary: str, needs_data: bool, options: dict[str, str] | None = None,
             granularity: str = "weight", joint: bool = False, in_all: bool = True,
             check_network: Callable[[nn.Module, dict], None] | None = None):
    """Decorator registering ``compute`` under ``name``; ``granularity`` is ``"weight"`` or ``"neuron"``;
    ``joint=True``: ``compute`` returns a solver with its scores (:class:`ScoreResult` ``solve``);
    ``in_all`` and ``check_network`` as in :class:`Criterion`."""
    if not isinstance(granularity, str) or granularity not in GRANULARITIES:
        raise SciPruneError(f"criterion {name!r}: granularity must be one of {GRANULARITIES}, got {granularity!r}")
    if joint and granularity != "weight":
        raise SciPruneError(f"criterion {name!r}: a joint criterion chooses weights; granularity must be 'weight'")

    def deco(fn: Callable[..., ScoreResult]) -> Callable[..., ScoreResult]:
        if name in _REGISTRY:
            raise RuntimeError(f"criterion {name!r} registered twice")
        _REGISTRY[name] = Criterion(name, summary, fn, needs_data, dict(options or {}), granularity, joint=bool(joint),
                                    in_all=bool(in_all), check_network=check_network)
        return fn

    return deco


def register_batched(name: str):
    """Decorator registering ``batched`` as the batched implementation of criterion ``name`` (already
    registered, in the same module: the batched path is optional and lives next to its criterion).

    Contract: ``batched(stack: Stacked, **options) -> ScoreResult | None``, ``options`` the
    criterion's own options as the user passed them (never ``names``, ``batch_size`` or a seed). It
    returns one :class:`ScoreResult` whose tensors carry a leading member axis: ``scores[name]`` of
    shape ``(M, *s)`` where ``compute`` returns ``s`` for one member, and ``bias_shifts`` (a
    compensating criterion) ``(M, *weight shape)``, or None. Member m's slice must equal what
    ``compute`` returns for member m alone (its parameters, its data, a generator seeded with
    ``stack.seeds[m]``) up to floating-point reassociation, in the same dtype; nothing is changed
    (``stack.params`` are copies). It returns None to decline (e.g. ``ec`` with random ``probes``, whose
    per-member draws only the loop reproduces): the members are then scored one by one with ``compute``.
    It is called only when ``stack.data`` is present or the criterion needs no data.
    """
    def deco(fn: Callable[..., ScoreResult | None]) -> Callable[..., ScoreResult | None]:
        crit = _REGISTRY.get(name)
        if crit is None:
            raise RuntimeError(f"criterion {name!r}: register it before its batched implementation")
        if crit.batched is not None:
            raise RuntimeError(f"criterion {name!r}: batched implementation registered twice")
        if crit.joint:
            raise RuntimeError(f"criterion {name!r}: a joint criterion is solved member by member, not batched")
        _REGISTRY[name] = dataclasses.replace(crit, batched=fn)
        return fn

    return deco


@contextmanager
def restoring_registry() -> Iterator[None]:
    """Test-only: every criterion registered (or given a batched implementation) inside the block is
    forgotten when it ends, so a test can register a throwaway criterion without leaking it."""
    _load_all()  # modules imported inside the block would not register again once forgotten
    saved = dict(_REGISTRY)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def get(name: str) -> Criterion:
    _load_all()
    if not isinstance(name, str):
        raise SciPruneError(f"method must be a name (str), one of {', '.join(available())}; got {name!r}")
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SciPruneError(f"unknown method {name!r}; available: {', '.join(available())}") from None


def is_joint(name) -> bool:
    """Whether registered criterion ``name`` chooses and compensates jointly (False for anything not
    registered)."""
    _load_all()
    crit = _REGISTRY.get(name) if isinstance(name, str) else None
    return crit is not None and crit.joint


def granularity_of(name) -> str:
    """The granularity of registered criterion ``name``; ``"weight"`` for anything not registered (an
    unknown name is refused where it is scored)."""
    _load_all()
    crit = _REGISTRY.get(name) if isinstance(name, str) else None
    return crit.granularity if crit is not None else "weight"


def available(granularity: str | None = None) -> list[str]:
    """Names of the registered criteria, sorted; only those of ``granularity`` (``"weight"`` or
    ``"neuron"``) when given."""
    _load_all()
    if granularity is not None and granularity not in GRANULARITIES:
        raise SciPruneError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    return sorted(n for n, c in _REGISTRY.items() if granularity is None or c.granularity == granularity)


def all_methods() -> list[str]:
    """What a study's ``methods = ["all"]`` runs: the weight criteria (its ratios are fractions of
    weights; a neuron criterion's is a fraction of neurons) registered with ``in_all`` (not those whose
    cost limits the networks they take, such as whole-network ``obs``)."""
    return [n for n in available(granularity="weight") if _REGISTRY[n].in_all]


def _load_all() -> None:
    """Import every module of this package once, so that adding a criterion is adding a module."""
    import importlib
    import pkgutil

    from .. import criteria as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{pkg.__name__}.{info.name}")
