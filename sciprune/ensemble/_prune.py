"""Score and prune M same-shaped members at once, member by member equal to ``scores`` / ``prune``.

Member ``m`` has its own weights, masks, data (its own noisy targets, its own inputs when splits
differ), seed and pruning ratio. The statistics are computed on stacked parameters (``(M, *shape)``
per name) in one pass over the rows:

* ``magnitude``: ``|W|`` of the stack; ``random``: member m's scores drawn from a generator seeded
  with its seed in the order of the single-model criterion (so they are identical to it);
* ``gradient``: one batched forward (``baddbmm`` per layer) and one autograd backward of
  ``sum_m L_m`` on the stacked weights; ``d(sum_k L_k)/dW_m = dL_m/dW_m``, so the gradients stay apart;
* ``ec`` and ``taylor-output`` (exact, ``probes=None``): the pass of :mod:`sciprune.criteria.ec` with
  a member axis: inputs ``a`` (M, B, in) of every Linear from the batched forward; output cotangents
  ``g`` (M, K, B, out) of every pre-activation from ``g_{l-1} = (g_l W_l) * act'(z_{l-1})`` (batched
  matmuls, one cotangent per output component K); ``G = sum_k g_k^2`` (M, B, out) and the sums
  ``S0 = sum_n G``, ``S1 = G^T (a - c)``, ``S2 = G^T (a - c)^2`` as ``torch.bmm`` per layer and chunk
  (``c``: each member's mean input over the first chunk, as in the single-model pass), summed in
  float64; then ``I = W^2 (S2 - S1^2/S0)/N`` and ``db = W S1/S0`` (Ballini et al. 2026, Sec. 3);
* ``compensate=True`` for a criterion without shifts: the EC shifts from the same batched pass.

Every other method (``ec-exact``, ``ec``/``taylor-output`` with random probes, models that are not a
plain Linear/activation ``nn.Sequential``, data given as an iterable of batches or with a different
number of rows per member) runs as a loop of :func:`sciprune.pruning.score_result` over the members,
so the functions accept everything the single-model ones do. Selection and the application of masks
and bias shifts always run member by member through :func:`sciprune.apply_plan` (cheap; it keeps the
rounding rule ``floor(r n + 0.5)`` and the masks-only-shrink rule of :mod:`sciprune.selection`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .. import criteria as _criteria
from ..batches import as_tensor
from ..criteria.ec import activation_backward
from ..errors import SciPruneError
from ..masks import prunable_names
from ..pruning import PrunePlan, PruneReport, apply_plan, ec_shifts, score_result
from ..selection import SCOPES, check_ratio
from ._stack import check_same_architecture, is_plain_chain, stack_models

__all__ = ["BATCHED_METHODS", "prune_ensemble", "score_ensemble"]

BATCHED_METHODS = ("magnitude", "random", "gradient", "taylor-output", "ec")
_GENERIC_OPTIONS = ("names", "batch_size")


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


def _resident(datas: list, M: int, device, dtype):
    """(X, x_shared, Y, y_shared, N) tensors for the batched pass, or None if the data do not allow it.

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
    return (*out, Xs[0].shape[0])


def _rows(X, shared: bool, s: slice, M: int) -> torch.Tensor:
    x = X[s] if shared else X[:, s]
    return x.expand(M, *x.shape) if shared else x


def _chunk_rows(M: int, widths: list[int], K: int, batch_size) -> int:
    """Rows per chunk: work tensors of about 2^22 elements (32 MB in float64), as in the EC pass."""
    per_row = M * max(K * max(widths), 2 * max(widths))
    rows = min(max((1 << 22) // max(per_row, 1), 256), 8192)
    return min(rows, int(batch_size)) if batch_size else rows


# --- the batched passes ----------------------------------------------------------------------------
# As in sciprune.criteria.ec.Chain, work tensors are reused from chunk to chunk (on a CPU a fresh
# temporary of a few MB costs page faults comparable to the op that fills it), the output
# cotangents of the K outputs are folded into the rows ((M, K, B, n) viewed as (M, K*B, n)) so every
# product is one torch.bmm, and sums over the rows are taken in the model's dtype per chunk and
# accumulated in float64.

class _Work:
    """Reusable buffers keyed by (purpose, shape, dtype, device)."""

    def __init__(self) -> None:
        self._bufs: dict[tuple, torch.Tensor] = {}

    def __call__(self, key, shape, like: torch.Tensor) -> torch.Tensor:
        k = (key, tuple(shape), like.dtype, like.device)
        buf = self._bufs.get(k)
        if buf is None:
            if len(self._bufs) > 64:
                self._bufs.clear()
            buf = self._bufs[k] = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
        return buf


def _steps(template: nn.Sequential) -> list[tuple]:
    return [("linear", None, f"{n}.weight", f"{n}.bias" if m.bias is not None else None)
            if isinstance(m, nn.Linear) else ("act", m, None, None) for n, m in template.named_children()]


def _forward(steps, P: dict, x: torch.Tensor, work: _Work) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Inputs (M, B, n) of every step and the output (M, B, K) of the stacked chain (in buffers)."""
    inputs, h = [], x
    for t, (kind, m, w, b) in enumerate(steps):
        inputs.append(h)
        if kind == "linear":
            Wt = P[w].transpose(1, 2)
            out = work(("f", t), (h.shape[0], h.shape[1], Wt.shape[2]), h)
            h = torch.baddbmm(P[b].unsqueeze(1), h, Wt, out=out) if b is not None else torch.bmm(h, Wt, out=out)
        elif type(m) is nn.Tanh:
            h = torch.tanh(h, out=work(("f", t), h.shape, h))
        elif type(m) is nn.ReLU:
            h = torch.clamp_min(h, 0, out=work(("f", t), h.shape, h))
        else:
            h = m(h.clone()) if getattr(m, "inplace", False) else m(h)
    return inputs, h


def _act_backward(m, g: torch.Tensor, z: torch.Tensor, out: torch.Tensor, work: _Work, key) -> torch.Tensor:
    """``g * act'(z)`` for g (M, K, B or 1, n) and z, out (M, B, n)."""
    M, K, _, n = g.shape
    shape = (M, K, z.shape[1], n)
    return activation_backward(m, g, z.unsqueeze(1), out.unsqueeze(1), work(key, shape, z))


def _backward(steps, P: dict, inputs, y: torch.Tensor, g: torch.Tensor, lowest: int, work: _Work):
    """Yield ``(t, g)`` for the Linear steps from the last down to ``lowest``: ``g`` (M or 1, K, B or 1,
    out) is the cotangent of the step's output for the output cotangents ``g`` given (same layout).

    A cotangent constant over the rows (the identity, exact EC) stays of size 1 along them up to the
    first activation. The yielded tensor lives in a buffer that the next step may overwrite.
    """
    j = 0
    for t in range(len(steps) - 1, lowest - 1, -1):
        kind, m, w, _ = steps[t]
        if kind == "linear":
            yield t, g
            if t > lowest:
                j += 1
                W = P[w]
                M, K, B = W.shape[0], g.shape[1], g.shape[2]
                if B == 1:
                    g = torch.matmul(g, W.unsqueeze(1))  # (1 or M, K, 1, out) @ (M, 1, out, in): tiny
                else:
                    gf = g.expand(M, *g.shape[1:]).reshape(M, K * B, g.shape[3])
                    res = work(("m", j % 2), (M, K * B, W.shape[2]), g)
                    g = torch.bmm(gf, W, out=res).view(M, K, B, W.shape[2])
        else:
            out = inputs[t + 1] if t + 1 < len(inputs) else y
            g = _act_backward(m, g, inputs[t], out, work, ("b", t))


def _ec_moments(template, P: dict, names: list[str], X, xs: bool, M: int, N: int, batch_size, second: bool):
    """Centred sums per weight name (float64): ``(S0 (M, out), S1 (M, out, in), S2 or None, c (M, in))``.

    ``G[m, n, i] = sum_k (dy_k/dz_i)^2`` from the cotangents of the K output components (the identity).
    """
    steps = _steps(template)
    at = {i: w for i, (kind, _, w, _) in enumerate(steps) if kind == "linear" and w in names}
    lowest = min(at)
    last = [i for i, s in enumerate(steps) if s[0] == "linear"][-1]
    K = P[steps[last][2]].shape[1]
    rows = _chunk_rows(M, [P[w].shape[i] for w in at.values() for i in (1, 2)], K, batch_size)
    acc, centre = {}, {}
    f64 = torch.float64
    work = _Work()
    with torch.no_grad():
        for start in range(0, N, rows):
            s = slice(start, min(N, start + rows))
            inputs, y = _forward(steps, P, _rows(X, xs, s, M), work)
            if y.ndim != 3:
                raise SciPruneError(f"the model output must have shape (batch, outputs), got {tuple(y.shape[1:])}")
            B = y.shape[1]
            eye = torch.eye(K, dtype=y.dtype, device=y.device).view(1, K, 1, K)
            for t, g in _backward(steps, P, inputs, y, eye, lowest, work):
                if t not in at:
                    continue
                G = torch.mul(g[:, 0], g[:, 0], out=work("G", g[:, 0].shape, g))  # sum_k g_k^2
                for k in range(1, K):
                    G.addcmul_(g[:, k], g[:, k])
                G = G.expand(M, *G.shape[1:])
                a = inputs[t]
                if t not in centre:
                    centre[t] = a.mean(1)
                    z = {"dtype": f64, "device": a.device}
                    acc[t] = [torch.zeros(M, G.shape[-1], **z), torch.zeros(M, G.shape[-1], a.shape[-1], **z),
                              torch.zeros(M, G.shape[-1], a.shape[-1], **z) if second else None]
                # a - c and (a - c)^2 in separate contiguous buffers (writing into slices of one copies)
                ac = torch.sub(a, centre[t].unsqueeze(1), out=work("c1", a.shape, a))
                ac2 = torch.mul(ac, ac, out=work("c2", a.shape, a)) if second else None
                for S, v in zip(acc[t][1:], (ac, ac2)):
                    if v is None:
                        continue
                    if G.shape[1] == 1:  # constant over the rows (the output layer): an outer product
                        S.add_(G[:, 0, :, None].to(f64) * v.sum(1)[:, None, :].to(f64))
                    else:
                        S.add_(torch.bmm(G.transpose(1, 2), v))
                acc[t][0].add_(B * G[:, 0].to(f64) if G.shape[1] == 1 else G.sum(1))
    return {at[t]: (S0, S1, S2, centre[t].to(f64)) for t, (S0, S1, S2) in acc.items()}


def _ec_shifts_and_scores(W: torch.Tensor, S0, S1, S2, c, N: int, kind: str):
    """EC importance and shift (``kind="ec"``), taylor-output importance, or the shift alone."""
    alive = (S0 > 0)[..., None]
    inv = torch.where(alive, 1.0 / torch.where(alive, S0[..., None], 1.0), 0.0)
    mean = S1 * inv
    shift = torch.where(alive, W * (mean + c[:, None, :]), 0.0)
    if kind == "shift":
        return None, shift
    if kind == "taylor-output":
        S2u = S2 + 2.0 * c[:, None, :] * S1 + c[:, None, :] ** 2 * S0[..., None]
        return W * W * S2u.clamp_min(0.0) / N, None
    var = (S2 * inv - mean * mean).clamp_min(0.0)
    return torch.where(alive, W * W * var * (S0[..., None] / N), 0.0), shift


def _gradient_scores(template, P: dict, names: list[str], X, xs, Y, ys, M: int, N: int, batch_size):
    """``|W * dL/dW|`` per member, ``L`` the mean training loss (MSE, or cross-entropy for labels).

    One explicit backward per chunk: ``dL/dy`` (``2 (y - Y)`` for the summed squared error,
    ``softmax(y) - onehot(Y)`` for the summed cross-entropy), propagated by the same batched pass as
    EC's cotangents (K = 1 cotangent, varying over the rows), and ``dL/dW = g^T a`` as one bmm per layer.
    """
    steps = _steps(template)
    at = {i: w for i, (kind, _, w, _) in enumerate(steps) if kind == "linear" and w in names}
    lowest = min(at)
    rows = _chunk_rows(M, [max(p.shape[1:]) for p in P.values() if p.ndim == 3], 1, batch_size)
    total = {n: torch.zeros(P[n].shape, dtype=torch.float64, device=P[n].device) for n in names}
    count = 0
    work = _Work()
    with torch.no_grad():
        for start in range(0, N, rows):
            s = slice(start, min(N, start + rows))
            inputs, y = _forward(steps, P, _rows(X, xs, s, M), work)
            Yb = _rows(Y, ys, s, M)
            if Yb.is_floating_point():
                if Yb.numel() != y.numel():
                    raise SciPruneError(f"targets of shape {tuple(Yb.shape[1:])} do not match outputs of "
                                        f"shape {tuple(y.shape[1:])}")
                dy = (y - Yb.reshape(y.shape)).mul_(2.0)
                count += y[0].numel()
            else:
                lab = Yb.long().reshape(M, -1, 1)
                dy = torch.softmax(y, dim=-1)
                dy.scatter_(-1, lab, dy.gather(-1, lab) - 1.0)
                count += y.shape[1]
            for t, g in _backward(steps, P, inputs, y, dy.unsqueeze(1), lowest, work):
                if t in at:
                    total[at[t]].add_(torch.bmm(g[:, 0].transpose(1, 2), inputs[t]))
    return {n: (P[n].to(torch.float64) * total[n] / count).abs() for n in names}


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


def _batched_kind(models, method: str, options: dict) -> bool:
    if method not in BATCHED_METHODS or not is_plain_chain(models[0]):
        return False
    return options.get("probes") is None  # random probes draw per member: the loop reproduces them


def _score(models, method, datas, seeds, options, M, crit, *, want_ec_shifts: bool):
    """(list of ScoreResult, list of EC shift dicts or None)."""
    names = list(options["names"]) if options.get("names") is not None else prunable_names(models[0])
    batch_size = options.get("batch_size")
    p0 = next(models[0].parameters())
    res = None
    if crit.needs_data or want_ec_shifts:
        res = _resident(datas, M, p0.device, p0.dtype) if datas[0] is not None else None
    batched = _batched_kind(models, method, options) and (res is not None or not crit.needs_data)
    if batched:
        missing = [n for n in names if n not in prunable_names(models[0])]
        if missing:
            raise SciPruneError(f"{missing} are not Linear weights of the chain; available: {prunable_names(models[0])}")
        P = stack_models(models)
        shifts = None
        if method == "magnitude":
            sc = {n: P[n].abs() for n in names}
        elif method == "random":
            gens = [torch.Generator().manual_seed(s) for s in seeds]
            sc = {n: torch.stack([torch.rand(P[n].shape[1:], generator=g, dtype=torch.float64) for g in gens])
                  .to(p0.device) for n in names}
        elif method == "gradient":
            X, xs, Y, ys, N = res
            sc = _gradient_scores(models[0], P, names, X, xs, Y, ys, M, N, batch_size)
        else:  # ec, taylor-output
            X, xs, _, _, N = res
            mom = _ec_moments(models[0], P, names, X, xs, M, N, batch_size, second=True)
            pairs = {n: _ec_shifts_and_scores(P[n].to(torch.float64), *mom[n], N, method) for n in names}
            sc = {n: pairs[n][0] for n in names}
            shifts = {n: pairs[n][1] for n in names} if method == "ec" else None
        results = [_criteria.ScoreResult({n: sc[n][m].clone() for n in names},
                                         None if shifts is None else {n: shifts[n][m].clone() for n in names})
                   for m in range(M)]
    else:
        results = [score_result(model, method, d, seed=s, **options) for model, d, s in zip(models, datas, seeds)]
    if not want_ec_shifts or all(r.bias_shifts for r in results):
        return results, None
    scored = list(results[0].scores)
    if res is not None and is_plain_chain(models[0]):
        X, xs, _, _, N = res
        P = stack_models(models)
        mom = _ec_moments(models[0], P, scored, X, xs, M, N, batch_size, second=False)
        st = {n: _ec_shifts_and_scores(P[n].to(torch.float64), *mom[n], N, "shift")[1] for n in scored}
        return results, [{n: st[n][m].clone() for n in scored} for m in range(M)]
    return results, [ec_shifts(model, d, names=scored, seed=s, batch_size=batch_size)
                     for model, d, s in zip(models, datas, seeds)]


def score_ensemble(models: Sequence[nn.Module], method: str, data=None, *, seeds=None,
                   **options) -> list[_criteria.ScoreResult]:
    """Scores (and bias shifts) of M same-shaped members in one batched pass; one ScoreResult each.

    Member m's result equals ``sciprune.pruning.score_result(models[m], method, data[m],
    seed=seeds[m], **options)`` up to floating-point reassociation (float64: below 1e-10 relative in the
    tests). Batched: ``magnitude``, ``random``, ``gradient``, ``taylor-output`` and ``ec`` (exact) on a
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
    results, extra = _score(models, method, datas, seeds, options, M, crit, want_ec_shifts=compensate is True)
    reports = []
    for m, (model, r) in enumerate(zip(models, results)):
        shifts = None if compensate is False else (r.bias_shifts or (extra[m] if extra else None))
        reports.append(apply_plan(model, PrunePlan(method, r.scores, shifts or None), rs[m], scope=scope))
    return reports
