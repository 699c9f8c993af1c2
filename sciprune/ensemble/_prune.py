"""Score and prune M same-shaped members at once, member by member equal to ``scores`` / ``prune``.

Member ``m`` has its own weights, masks, data (its own noisy targets, its own inputs when splits
differ), seed and pruning ratio. A criterion that registers a batched implementation
(:func:`sciprune.criteria.register_batched`) is scored on stacked parameters (``(M, *shape)`` per name)
in one pass over the rows; the built-in ones (:data:`BATCHED_METHODS`, each in its criterion's module):

* ``magnitude``: ``|W|`` of the stack; ``random``: member m's scores drawn from a generator seeded
  with its seed in the order of the single-model criterion (so they are identical to it);
* ``gradient``: one batched forward (``baddbmm`` per layer) and one batched backward of
  ``sum_m L_m`` on the stacked weights; ``d(sum_k L_k)/dW_m = dL_m/dW_m``, so the gradients stay apart;
* ``ec`` and ``taylor-output`` (exact, ``probes=None``): the pass of :mod:`sciprune.criteria.ec` with
  a member axis: inputs ``a`` (M, B, in) of every Linear from the batched forward; output cotangents
  ``g`` (M, K, B, out) of every pre-activation from ``g_{l-1} = (g_l W_l) * act'(z_{l-1})`` (batched
  matmuls, one cotangent per output component K); ``G = sum_k g_k^2`` (M, B, out) and the sums
  ``S0 = sum_n G``, ``S1 = G^T (a - c)``, ``S2 = G^T (a - c)^2`` as ``torch.bmm`` per layer and chunk
  (``c``: each member's mean input over the first chunk, as in the single-model pass), summed in
  float64; then ``I = W^2 (S2 - S1^2/S0)/N`` and ``db = W S1/S0`` (Ballini et al. 2026, Sec. 3);
* ``obd``, ``lm`` and ``qm``: a stacked forward and one walk of the C (+1) cotangents of the loss
  (:mod:`sciprune.criteria._loss_models_batched`), each member on its own rows;
* ``compensate=True`` for a criterion without shifts: the EC shifts from the same batched pass
  (:func:`sciprune.criteria.ec.batched_compensation_shifts`).

A joint criterion (``obs-layer``: it chooses and compensates together, :mod:`sciprune.criteria`) is
planned and solved member by member: ``prune_ensemble`` runs :func:`sciprune.plan` and
:func:`sciprune.apply_plan` on each member, exactly as :func:`sciprune.prune` would.

Everything else runs as a loop of :func:`sciprune.pruning.score_result` over the members: a criterion
without a batched implementation or whose implementation declines (``ec``/``taylor-output`` with random
probes), models that are not a plain Linear/activation ``nn.Sequential``, data given as an iterable of
batches or with a different number of rows per member; so the functions accept everything the
single-model ones do. Selection and the application of masks and bias shifts always run member by
member through :func:`sciprune.apply_plan` (cheap; it keeps the rounding rule ``floor(r n + 0.5)`` and
the masks-only-shrink rule of :mod:`sciprune.selection`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import criteria as _criteria
from ..batches import as_tensor
from ..criteria._registry import Resident, Stacked
from ..criteria.ec import batched_compensation_shifts
from ..errors import SciPruneError
from ..masks import prunable_names
from ..neurons import check_hidden_names
from ..pruning import PrunePlan, PruneReport, apply_plan, ec_shifts, plan, score_result
from ..selection import SCOPES, check_ratio
from ._stack import check_same_architecture, is_plain_chain, stack_models

__all__ = ["BATCHED_METHODS", "batched_methods", "prune_ensemble", "score_ensemble"]

_GENERIC_OPTIONS = ("names", "batch_size")


def batched_methods() -> tuple[str, ...]:
    """The registered criteria with a batched implementation (sorted); ``BATCHED_METHODS`` reads it."""
    return tuple(n for n in _criteria.available() if _criteria.get(n).batched is not None)


def __getattr__(name: str):
    if name == "BATCHED_METHODS":  # read from the registry when asked (criteria register on first use)
        return batched_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- arguments -------------------------------------------------------------------------------------

def _per_member(obj, M: int, what: str) -> list:
    """A list must hold one entry per member; anything else is shared by all members."""
    if isinstance(obj, list):
        if len(obj) != M:
            raise SciPruneError(f"{what} must be one shared value or a list with one entry per member; "
                                f"got {len(obj)} entries for {M} members")
        return list(obj)
    return [obj] * M


def _seeds(seeds, M: int) -> list[int]:
    if seeds is None:
        return [0] * M  # the default of sciprune.scores / sciprune.prune
    out = _per_member(seeds, M, "seeds")
    for i, s in enumerate(out):
        if isinstance(s, bool) or not isinstance(s, int):
            raise SciPruneError(f"seeds must be None, an int or a list of M ints; entry {i} is {s!r}")
    return [int(s) for s in out]


def _check_options(crit, method: str, options: dict) -> None:
    if "seed" in options:
        raise SciPruneError("seed is not an option of the ensemble functions; use seeds=<int or list of M ints>")
    unknown = set(options) - set(crit.options) - set(_GENERIC_OPTIONS)
    if unknown:
        allowed = ", ".join(sorted(crit.options)) or "none"
        raise SciPruneError(f"unknown option(s) {sorted(unknown)} for method {method!r}; allowed: {allowed}")


def _resident(datas: list, M: int, device, dtype) -> Resident | None:
    """The data as tensors for the batched pass (:class:`Resident`), or None if they do not allow it.

    Shared objects are converted once and kept as (N, ...) tensors; distinct ones are stacked (M, N, ...).
    """
    from ..data._types import TaskData

    pairs = []
    for d in datas:
        if isinstance(d, TaskData):
            d = (d.X_train, d.Y_train)
        if not (isinstance(d, tuple) and len(d) == 2):
            return None  # an iterable of batches: the per-member loop handles it
        pairs.append(d)
    cache: dict[int, torch.Tensor] = {}

    def conv(o, name):
        if id(o) not in cache:
            cache[id(o)] = as_tensor(o, device=device, dtype=dtype, name=name)
        return cache[id(o)]

    Xs = [conv(x, "X") for x, _ in pairs]
    Ys = [conv(y, "Y") for _, y in pairs]
    Xs = [x[:, None] if x.ndim == 1 else x for x in Xs]
    for x, y in zip(Xs, Ys):
        if x.shape[0] != y.shape[0]:
            raise SciPruneError(f"X and Y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    out = []
    for ts in (Xs, Ys):
        if all(t is ts[0] for t in ts):
            out += [ts[0], True]
        elif all(t.shape == ts[0].shape and t.dtype == ts[0].dtype for t in ts):
            out += [torch.stack(ts), False]
        else:
            return None  # members with different numbers of rows: per-member loop
    return Resident(*out, Xs[0].shape[0])




# --- entry points ----------------------------------------------------------------------------------

def _setup(models, method: str, data, seeds, options: dict):
    models = list(models)
    check_same_architecture(models)
    M = len(models)
    crit = _criteria.get(method)
    _check_options(crit, method, options)
    if options.get("names") is not None and len(options["names"]) == 0:
        raise SciPruneError("names must list at least one weight name, got an empty list; use names=None for all")
    datas = _per_member(data, M, "data")
    if crit.needs_data and any(d is None for d in datas):
        raise SciPruneError(f"method {method!r} needs data: pass (X, Y) or a list of M (X, Y)")
    return models, M, crit, datas, _seeds(seeds, M)


def _batched_names(template: nn.Module, crit, options: dict) -> list[str]:
    """The weights a batched implementation scores: ``names`` checked against the chain (hidden layers'
    weights for a neuron criterion), all of them by default."""
    names = options.get("names")
    if crit.granularity == "neuron":
        return check_hidden_names(template, names)
    prunable = prunable_names(template)
    if names is None:
        return prunable
    missing = [n for n in list(names) if n not in prunable]
    if missing:
        raise SciPruneError(f"{missing} are not Linear weights of the chain; available: {prunable}")
    return list(names)


def _member(out: _criteria.ScoreResult, names: list[str], m: int) -> _criteria.ScoreResult:
    """Member m's slice of a batched ScoreResult (tensors (M, ...))."""
    shifts = out.bias_shifts
    return _criteria.ScoreResult({n: out.scores[n][m].clone() for n in names},
                                 None if shifts is None else {n: shifts[n][m].clone() for n in names})


def _score(models, method, datas, seeds, options, M, crit, *, want_ec_shifts: bool):
    """(list of ScoreResult, list of EC shift dicts or None)."""
    batch_size = options.get("batch_size")
    p0 = next(models[0].parameters())
    res = None
    if crit.needs_data or want_ec_shifts:
        res = _resident(datas, M, p0.device, p0.dtype) if datas[0] is not None else None
    chain = is_plain_chain(models[0])
    stack, results = None, None
    if crit.batched is not None and chain and (res is not None or not crit.needs_data):
        names = _batched_names(models[0], crit, options)
        stack = Stacked(models[0], stack_models(models), names, res, seeds, batch_size)
        out = crit.batched(stack, **{k: v for k, v in options.items() if k not in _GENERIC_OPTIONS})
        if out is not None:
            results = [_member(out, names, m) for m in range(M)]
    if results is None:
        results = [score_result(model, method, d, seed=s, **options) for model, d, s in zip(models, datas, seeds)]
    if not want_ec_shifts or all(r.bias_shifts for r in results):
        return results, None
    scored = list(results[0].scores)
    if res is not None and chain:
        params = stack.params if stack is not None else stack_models(models)
        st = batched_compensation_shifts(Stacked(models[0], params, scored, res, seeds, batch_size))
        return results, [{n: st[n][m].clone() for n in scored} for m in range(M)]
    return results, [ec_shifts(model, d, names=scored, seed=s, batch_size=batch_size)
                     for model, d, s in zip(models, datas, seeds)]


def score_ensemble(models: Sequence[nn.Module], method: str, data=None, *, seeds=None,
                   **options) -> list[_criteria.ScoreResult]:
    """Scores (and bias shifts) of M same-shaped members in one batched pass; one ScoreResult each.

    Member m's result equals ``sciprune.pruning.score_result(models[m], method, data[m],
    seed=seeds[m], **options)`` up to floating-point reassociation (float64: below 1e-10 relative in the
    tests). Batched: every criterion with a batched implementation (:data:`BATCHED_METHODS`) on a
    plain ``nn.Sequential`` of Linear layers and elementwise activations; anything else is scored
    member by member (see the module docstring). The models are not changed.

    Args:
        models: M modules of one architecture, dtype and device (weights and masks may differ).
        method: a registered criterion (``sciprune methods``).
        data: one ``(X, Y)`` or TaskData shared by all members, or a list of M of them (X (N, in),
            Y (N, out) float or (N,) int labels; N equal for all members to be batched). A list always
            means one entry per member: pass a shared iterable of batches as a non-list (a DataLoader).
        seeds: None (seed 0 for every member, as ``sciprune.scores``), one int, or a list of M ints.
        **options: ``names``, ``batch_size`` (rows per chunk at most) and the criterion's options.
    """
    models, M, crit, datas, seeds = _setup(models, method, data, seeds, options)
    return _score(models, method, datas, seeds, options, M, crit, want_ec_shifts=False)[0]


def prune_ensemble(models: Sequence[nn.Module], method: str, ratios, data=None, *, scope: str = "global",
                   compensate: bool | None = None, seeds=None, **options) -> list[PruneReport]:
    """Prune member m of ``models`` at ``ratios[m]`` in place, lowest ``method`` scores first.

    Member m ends as ``sciprune.prune(models[m], method, ratios[m], data[m], scope=scope,
    compensate=compensate, seed=seeds[m], **options)`` would leave it (same masks, biases within
    float rounding). Scoring is batched (:func:`score_ensemble`); the EC shifts of ``compensate=True``
    too; selection and the application of masks and shifts run per member (:func:`sciprune.apply_plan`).
    A joint criterion runs :func:`sciprune.plan` and :func:`sciprune.apply_plan` member by member.

    Args:
        ratios: one ratio in [0, 1) for all members or M ratios (a list, tuple or array).
        compensate: None (the criterion's own shifts), True (EC shifts for any criterion; needs data)
            or False (no shifts), as in :func:`sciprune.prune`.
        models, method, data, seeds, options: as in :func:`score_ensemble`.
    """
    models = list(models)
    check_same_architecture(models)
    if not isinstance(ratios, (list, str)) and hasattr(ratios, "__len__"):  # a tuple or a numpy array
        ratios = list(ratios)
    rs = [check_ratio(r) for r in _per_member(ratios, len(models), "ratios")]
    if scope not in SCOPES:
        raise SciPruneError(f"scope must be one of {SCOPES}, got {scope!r}")
    if compensate not in (None, True, False):
        raise SciPruneError(f"compensate must be None (the criterion's own), True or False, got {compensate!r}")
    models, M, crit, datas, seeds = _setup(models, method, data, seeds, options)
    if compensate is True and any(d is None for d in datas):
        raise SciPruneError("compensate=True computes elimination-compensation bias shifts from data; pass "
                            "data=(X, Y) or a list of M (X, Y) (the training sets), or use compensate=None")
    if crit.joint:  # chooses and compensates together: each member planned and solved on its own
        return [apply_plan(model, plan(model, method, d, compensate=compensate, seed=s, **options), r, scope=scope)
                for model, d, s, r in zip(models, datas, seeds, rs)]
    results, extra = _score(models, method, datas, seeds, options, M, crit, want_ec_shifts=compensate is True)
    reports = []
    for m, (model, r) in enumerate(zip(models, results)):
        shifts = None if compensate is False else (r.bias_shifts or (extra[m] if extra else None))
        reports.append(apply_plan(model, PrunePlan(method, r.scores, shifts or None), rs[m], scope=scope))
    return reports
