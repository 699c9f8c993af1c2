"""The library entry points for scoring and pruning: ``scores`` and ``prune``.

Score, select, apply: a criterion scores every prunable weight (``sciprune.criteria``), selection
turns scores into keep-masks for a ratio and scope (``sciprune.selection``), and the one mask
mechanism applies them (``sciprune.masks``), plus bias shifts where the criterion compensates
or ``prune(..., compensate=True)`` asks for elimination-compensation shifts.

A *joint* criterion (Optimal Brain Surgeon, ``obs-layer``) chooses and compensates together: its solver
gives the keep-masks and the updates of any parameters at a ratio. Every plan is applied by one step,
:func:`apply_plan`: it resolves the plan into a :class:`~sciprune.criteria.Solution` (keep-masks and
float64 parameter updates; for a scoring criterion the selected masks and, when it compensates, each
bias's summed shifts of the weights removed from its row), adds the updates, then sets the masks.

A criterion of granularity ``"neuron"`` (``sciprune.criteria.Criterion.granularity``) scores hidden
neurons instead; every entry point here then takes a *neuron* ratio and removes whole neurons (their
rows, bias entries and next-layer columns; :mod:`sciprune.neurons`), unchanged for callers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from . import criteria as _criteria
from .batches import as_batches
from .checks import check_choice, check_positive_int, check_seed
from .errors import SciPruneError
from .masks import get_masks, prunable_names, sparsity
from .models import device_and_dtype
from .neurons import (alive_neurons, check_hidden_names, check_neuron_target, hidden_layers, neuron_param_masks,
                      select_neurons)
from .selection import SCOPES, check_ratio, select
from .solutions import bias_updates, check_planned_on, masks_only, model_state, write_solution

__all__ = ["scores", "score_result", "prune", "PruneReport", "PrunePlan", "plan", "apply_plan", "ec_shifts",
           "masks_only"]


def score_result(
    model: nn.Module,
    method: str,
    data=None,
    *,
    names: list[str] | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    **options,
) -> _criteria.ScoreResult:
    """Run criterion ``method`` and return its full :class:`ScoreResult` (scores and bias shifts).

    For a neuron criterion ``names`` are hidden layers' weights (default: all of them) and each score
    is ``(out_features,)``; a model that is not a plain Linear/activation chain is refused. A joint
    criterion's result also holds its solver (``solve``), which :func:`plan` keeps.
    """
    _check_model(model)
    crit = _criteria.get(method)
    unknown = set(options) - set(crit.options)
    if unknown:
        allowed = ", ".join(sorted(crit.options)) or "none"
        raise SciPruneError(f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {allowed}")
    neuron = crit.granularity == "neuron"
    names = check_hidden_names(model, names) if neuron else _check_names(model, names)
    seed = check_seed(seed)
    batch_size = check_positive_int(batch_size, "batch_size", none_ok=True)
    device, dtype = device_and_dtype(model)
    batches = None
    if crit.needs_data:
        if data is None:
            raise SciPruneError(f"method {method!r} needs data: pass (X, Y) or an iterable of batches")
        batches = as_batches(data, device=device, dtype=dtype, batch_size=batch_size, model=model)
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    grads = {n: p.grad for n, p in model.named_parameters()}
    try:
        result = crit.compute(model, batches, names, generator, **options)
    finally:
        model.train(was_training)
        for n, p in model.named_parameters():
            p.grad = grads[n]
    missing = set(names) - set(result.scores)
    if missing:
        raise RuntimeError(f"criterion {method!r} returned no scores for {sorted(missing)}")
    if crit.joint != callable(result.solve) or (crit.joint and result.bias_shifts):
        raise RuntimeError(f"criterion {method!r}: a joint criterion returns a solver and no bias shifts, "
                           "any other no solver")
    if neuron:
        params = dict(model.named_parameters())
        bad = [n for n in names if tuple(result.scores[n].shape) != (params[n].shape[0],)]
        if bad or result.bias_shifts:
            raise RuntimeError(f"neuron criterion {method!r} must return one score per row of {bad or names} "
                               "and no bias shifts")
    return result


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _check_names(model: nn.Module, names) -> list[str]:
    """The prunable weights to score: all of them (None) or a list of their names."""
    prunable = prunable_names(model)
    if names is None:
        return prunable
    if isinstance(names, str) or not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise SciPruneError(f"names must be a list of parameter names such as {prunable[:2]}, got {names!r}")
    unknown = [n for n in names if n not in prunable]
    if unknown:
        raise SciPruneError(f"names {unknown} are not prunable weights of this model (the weights of its "
                            f"nn.Linear layers); prunable: {prunable}")
    return list(names)


def scores(model: nn.Module, method: str, data=None, **options) -> dict[str, torch.Tensor]:
    """Importance of every prunable weight: ``{parameter name: tensor shaped like it}`` (higher = keep).

    ``data`` is ``(X, Y)`` (tensors or arrays), a TaskData, or an iterable of ``(X, Y)`` batches;
    criteria that need no data ignore it. Options: ``seed``, ``batch_size``, ``names`` and the
    criterion's own (see ``sciprune methods``). The model is left unchanged.
    """
    return score_result(model, method, data, **options).scores


@dataclass(frozen=True)
class PruneReport:
    """What :func:`prune` did: the method, requested ratio, achieved sparsity from the live tensors,
    and whether the biases were shifted to compensate the removed weights (``compensated``).

    ``pruned`` / ``total`` (hence ``achieved``) count the units of the ratio in the scored pool:
    weights for a weight criterion, hidden neurons for a neuron criterion (``granularity``).
    ``neurons_pruned`` / ``neurons_total``: removed hidden neurons of the scored layers (None for a
    weight criterion); ``weights_pruned`` / ``weights_total``: masked entries over every Linear
    weight of the model, whatever the granularity (for a weight criterion scoring all weights, the
    same as ``pruned`` / ``total``).
    """

    method: str
    ratio: float
    scope: str
    pruned: int
    total: int
    sparsity: dict = field(repr=False)
    compensated: bool = False
    granularity: str = "weight"
    neurons_pruned: int | None = None
    neurons_total: int | None = None
    weights_pruned: int | None = None
    weights_total: int | None = None

    @property
    def achieved(self) -> float:
        return self.pruned / self.total if self.total else 0.0

    @property
    def neuron_sparsity(self) -> float | None:
        """Removed fraction of the scored hidden neurons; None for a weight criterion."""
        if self.neurons_total is None:
            return None
        return self.neurons_pruned / self.neurons_total if self.neurons_total else 0.0

    @property
    def weight_sparsity(self) -> float | None:
        """Masked fraction of all Linear weights of the model."""
        if self.weights_total is None:
            return None
        return self.weights_pruned / self.weights_total if self.weights_total else 0.0


@dataclass(frozen=True)
class PrunePlan:
    """Scores and bias shifts of one criterion on one (dense) model, ready to prune at any ratio.

    Made once by :func:`plan` and applied by :func:`apply_plan` to the model or to copies of it, so a
    study that prunes one trained network at many ratios scores it once (``ec-exact`` costs one
    forward pass per weight). ``shifts`` is None when no compensation is applied.

    ``solve``: a joint criterion's solver (:class:`~sciprune.criteria.ScoreResult`), which chooses the
    masks and the parameter updates at each ratio instead of selecting by ``scores`` (then informative);
    its costly part (``obs-layer``: the layer Hessians, their inverses and the greedy removal orders) was
    done once when the plan was made. ``planned_on``: the parameters and masks it was made on; a joint
    plan applies only to a model (or copy) that still has them.
    """

    method: str
    scores: dict[str, torch.Tensor] = field(repr=False)
    shifts: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    granularity: str | None = None
    solve: _criteria.Solver | None = field(default=None, repr=False)
    planned_on: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # None: the registered criterion's granularity ("weight" for a name not registered)
        g = self.granularity
        if g is None:
            g = _criteria.granularity_of(self.method)
            object.__setattr__(self, "granularity", g)
        check_choice(g, _criteria.GRANULARITIES, "granularity")
        if self.solve is not None and (g != "weight" or self.shifts):
            raise SciPruneError(f"a joint plan ({self.method!r}) chooses weights and compensates by its own updates: "
                                "it takes granularity 'weight' and no bias shifts")


def plan(model: nn.Module, method: str, data=None, *, compensate: bool | None = None, **options) -> PrunePlan:
    """Score ``model`` with ``method`` and resolve its bias shifts for ``compensate`` (see :func:`prune`);
    for a joint criterion, its solver (with its updates, or without them for ``compensate=False``)."""
    if compensate is not None and not isinstance(compensate, bool):
        raise SciPruneError(f"compensate must be None (the criterion's own), True or False, got {compensate!r}")
    if compensate is True and _criteria.granularity_of(method) == "neuron":
        raise SciPruneError(f"compensate=True (elimination-compensation bias shifts) is defined per weight; method "
                            f"{method!r} removes whole neurons: use compensate=None or False")
    if compensate is True and data is None:
        raise SciPruneError(
            "compensate=True computes elimination-compensation bias shifts from data; pass data=(X, Y) "
            "(the training set) or use compensate=None"
        )
    result = score_result(model, method, data, **options)
    if result.solve is not None:  # a joint criterion: its own updates (None, True) or its masks only (False)
        solve = masks_only(result.solve) if compensate is False else result.solve
        return PrunePlan(method, result.scores, None, "weight", solve=solve, planned_on=model_state(model))
    shifts = None if compensate is False else result.bias_shifts
    if compensate is True and not shifts:
        shifts = ec_shifts(model, data, names=list(result.scores), seed=options.get("seed", 0),
                           batch_size=options.get("batch_size"))
    return PrunePlan(method, result.scores, shifts or None, _criteria.granularity_of(method))


def ec_shifts(model: nn.Module, data, *, names: list[str] | None = None, seed: int = 0,
              batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Elimination-compensation bias shifts of every weight: db_ij = W_ij E[G_i a_j] / E[G_i].

    (Ballini et al. 2026; see :mod:`sciprune.criteria.ec`.) Used by ``compensate=True`` for
    criteria that rank without compensating.
    """
    from .criteria.ec import compensation_shifts

    _check_model(model)
    names, seed = _check_names(model, names), check_seed(seed)
    device, dtype = device_and_dtype(model)
    batches = as_batches(data, device=device, dtype=dtype, batch_size=batch_size, model=model)
    generator = torch.Generator().manual_seed(seed)
    return compensation_shifts(model, batches, names, generator)


def apply_plan(model: nn.Module, prune_plan: PrunePlan, ratio: float, *, scope: str = "global") -> PruneReport:
    """Prune ``ratio`` of the weights of ``model`` in place as ``prune_plan`` says (its scores, or its solver).

    ``model`` is the network the plan was made on or a copy of it (parameters are matched by
    name). Each bias gets the summed shifts of the weights removed from its row. A neuron plan
    (``prune_plan.granularity == "neuron"``) removes ``ratio`` of the scored hidden neurons instead.
    A joint plan's solver gives the masks and the parameter updates; it applies only to the network as
    it was planned (same parameters and masks), or a copy of it.
    """
    _check_model(model)
    if not isinstance(prune_plan, PrunePlan):
        raise SciPruneError(f"prune_plan must be a PrunePlan made by sciprune.plan, got {type(prune_plan).__name__}")
    ratio = check_ratio(ratio)
    check_choice(scope, SCOPES, "scope")
    if prune_plan.granularity == "neuron":
        return _apply_neuron_plan(model, prune_plan, ratio, scope)
    names = list(prune_plan.scores)
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params or params[n].shape != prune_plan.scores[n].shape]
    if missing:
        raise SciPruneError(f"the plan does not fit this model: no parameter of the scored shape for {missing}")
    check_planned_on(model, prune_plan)
    solution = _solution(model, prune_plan, ratio, scope, get_masks(model, names=names))
    write_solution(model, solution)
    compensated = bool(prune_plan.shifts) if prune_plan.solve is None else bool(solution.updates)
    return _report(model, prune_plan.method, ratio, scope, solution.keep, compensated=compensated)


def _report(model: nn.Module, method: str, ratio: float, scope: str, keep: dict[str, torch.Tensor], *,
            compensated: bool) -> PruneReport:
    """The report of a weight pruning: ``keep`` counts the pool, the model's masks every Linear weight."""
    total = sum(m.numel() for m in keep.values())
    pruned = sum(int((~m).sum()) for m in keep.values())
    return PruneReport(method, ratio, scope, pruned, total, sparsity(model), compensated=compensated,
                       **_weight_counts(model))


def _solution(model: nn.Module, prune_plan: PrunePlan, ratio: float, scope: str,
              before: dict[str, torch.Tensor]) -> _criteria.Solution:
    """The plan at ``ratio``: the solver's masks and updates, or the masks selected by the scores with
    the bias updates of the shifts (when the plan has them) of the weights they remove."""
    if prune_plan.solve is None:
        keep = select(prune_plan.scores, ratio, scope=scope, masks=before)
        updates = bias_updates(model, prune_plan.shifts, {n: before[n] & ~keep[n] for n in keep}) \
            if prune_plan.shifts else {}
        return _criteria.Solution(keep, updates)
    keep, updates = prune_plan.solve(ratio, scope)
    params = dict(model.named_parameters())
    bad = [n for n, t in {**keep, **updates}.items() if n not in params or tuple(t.shape) != tuple(params[n].shape)]
    if bad or keep.keys() != before.keys():
        raise RuntimeError(f"the solver of {prune_plan.method!r} returned masks or updates that do not fit the model "
                           f"({bad or sorted(set(keep) ^ set(before))})")
    return _criteria.Solution(keep, updates)


def _weight_counts(model: nn.Module) -> dict[str, int]:
    masks = get_masks(model).values()
    return {"weights_pruned": sum(int((~m).sum()) for m in masks), "weights_total": sum(m.numel() for m in masks)}


def _apply_neuron_plan(model: nn.Module, prune_plan: PrunePlan, ratio: float, scope: str) -> PruneReport:
    """Remove ``ratio`` of the scored hidden neurons (rows, bias entries, next-layer columns)."""
    if prune_plan.shifts:
        raise SciPruneError(f"a neuron plan ({prune_plan.method!r}) cannot carry bias shifts: compensation is "
                            "defined per weight; make the plan with compensate=None or False")
    layers = [h for h in hidden_layers(model) if h.weight in prune_plan.scores]
    params = dict(model.named_parameters())
    bad = [n for n, s in prune_plan.scores.items()
           if n not in {h.weight for h in layers} or tuple(s.shape) != (params[n].shape[0],)]
    if bad:
        raise SciPruneError(f"the neuron plan does not fit this model: no hidden layer with that many neurons for {bad}")
    keep = select_neurons(prune_plan.scores, ratio, scope=scope, alive=alive_neurons(model, list(prune_plan.scores)))
    write_solution(model, _criteria.Solution(neuron_param_masks(layers, keep, params), {}))
    pruned = sum(int((~k).sum()) for k in keep.values())
    total = sum(k.numel() for k in keep.values())
    return PruneReport(prune_plan.method, ratio, scope, pruned, total, sparsity(model), granularity="neuron",
                       neurons_pruned=pruned, neurons_total=total, **_weight_counts(model))


def prune(
    model: nn.Module,
    method: str,
    ratio: float,
    data=None,
    *,
    scope: str = "global",
    compensate: bool | None = None,
    **options,
) -> PruneReport:
    """Prune ``ratio`` of the prunable weights of ``model`` in place, lowest ``method`` scores first.

    ``ratio`` is the fraction of weights removed (biases excluded), in [0, 1), or of hidden neurons
    for a neuron criterion such as ``neuron-magnitude`` (:mod:`sciprune.neurons`); ``scope`` is
    ``"global"`` (one ranking over all layers) or ``"layer"`` (the ratio in each layer). Masks only
    shrink and are held by :mod:`sciprune.masks` through later training.

    ``compensate`` decides the bias shifts (elimination-compensation, Ballini et al. 2026): ``None``
    (default) applies the criterion's own (``ec``, ``ec-exact``; none for the others); ``True``
    applies EC shifts whatever the criterion (its own if it has them, else
    :func:`sciprune.criteria.ec.compensation_shifts` of the dense model, which needs ``data``);
    ``False`` applies none, even for ``ec``, which separates a ranking from its compensation. Each
    bias gets the summed shifts of the weights removed from its row, computed before the removal.
    A joint criterion (``obs-layer``) compensates by its own updates of the remaining weights and
    biases: ``None`` and ``True`` apply them, ``False`` keeps its choice of weights without them.
    ``prune`` is :func:`plan` followed by :func:`apply_plan`; call those two to prune one model at
    many ratios with one scoring.
    """
    check_ratio(ratio)
    check_choice(scope, SCOPES, "scope")  # checked before the (possibly long) scoring
    if _criteria.granularity_of(method) == "neuron":
        _check_model(model)
        check_neuron_target(model, ratio, scope=scope, names=options.get("names"))
    return apply_plan(model, plan(model, method, data, compensate=compensate, **options), ratio, scope=scope)
