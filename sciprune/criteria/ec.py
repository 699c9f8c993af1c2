"""Elimination-compensation (EC): output change after the optimal bias compensation of a removal.

Ballini, Muscarnera, Fumagalli, Scotti, Regazzoni, arXiv 2602.20467 (2026), Sec. 3. Layer l computes
``z = W a + b``. Removing ``W_ij`` and shifting ``b_i`` by ``db`` changes the outputs, to first order,
by ``dy_k = dy_k/dW_ij W_ij - dy_k/db_i db``; the importance is the smallest mean square change

    I_ij  = min_db E_x[ sum_k (dy_k/dW_ij W_ij - dy_k/db_i db)^2 ],
    db_ij = W_ij E_x[sum_k dy_k/dW_ij dy_k/db_i] / E_x[sum_k (dy_k/db_i)^2]   (the minimiser).

With ``g_ik = dy_k/dz_i`` and ``G_i = sum_k g_ik^2`` per sample (dy_k/dW_ij = g_ik a_j, dy_k/db_i = g_ik):

    db_ij = W_ij E[G_i a_j] / E[G_i],    I_ij = W_ij^2 (E[G_i a_j^2] - E[G_i a_j]^2 / E[G_i]),

three matrix products per layer over one pass of the training set (``S0 = sum G``, ``S1 = G^T a``,
``S2 = G^T a^2``), plus the ``g`` of every layer from one backward pass per output component (exact),
or from ``probes`` random cotangents v with E[v v^T] = I, an unbiased estimate of G:
``G_i ~ mean_p (sum_k v_pk g_ik)^2`` (so S0, S1, S2 are unbiased; I and db, ratios of them, are
consistent, not unbiased). A neuron with G_i = 0 on all the data gets I = db = 0.

``prune`` removes the lowest I and adds to each bias the summed shifts of its removed weights, which
is also the jointly optimal shift of that row under the linearisation.

Numerics: products are formed per chunk of rows (2048-8192 on a CPU) in the model's dtype, with the
layer inputs centred on their mean over the first chunk (the variance-like difference above then
does not cancel in float32), and summed across chunks in float64. Cost: one forward pass, K (or
``probes``) backward passes through the activations only (no weight gradients), and one product
``G^T [a, a^2]`` of twice the size of a weight gradient per layer (the output layer's is free when
exact). ``benchmarks/bench_ec_scores.py`` measures it against one forward and backward pass.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..chain import Factored, Walker
from ..errors import SciPruneError
from ._registry import ScoreResult, Stacked, register, register_batched

__all__ = ["ECStatistics", "batched_compensation_shifts", "batched_output_sensitivity", "compensation_shifts",
           "ec_scores", "ec_statistics"]

def check_probes(probes, distribution: str) -> None:
    """Validate the random-probe options shared by the output-sensitivity criteria."""
    if probes is not None and (isinstance(probes, bool) or not isinstance(probes, int) or probes < 1):
        raise SciPruneError(f"probes must be a positive integer or None (exact), got {probes!r}")
    if distribution not in ("rademacher", "gaussian"):
        raise SciPruneError(f"probe_distribution must be 'rademacher' or 'gaussian', got {distribution!r}")


def cotangents(K: int, B: int, probes, distribution: str, generator: torch.Generator, *, like: torch.Tensor) -> torch.Tensor:
    """Output cotangents: the identity (K, 1, K) for ``probes=None``, else (P, B, K) random probes.

    Probes are drawn per sample on the CPU from ``generator`` (reproducible on any device), with
    E[v v^T] = I: Rademacher signs or standard normals.
    """
    if probes is None:
        return torch.eye(K, dtype=like.dtype, device=like.device)[:, None, :]
    if distribution == "rademacher":
        v = torch.randint(0, 2, (probes, B, K), generator=generator, dtype=torch.int8).to(like.dtype) * 2 - 1
    else:
        v = torch.randn((probes, B, K), generator=generator, dtype=torch.float64).to(like.dtype)
    return v.to(like.device)


def row_chunks(n: int, per_row: int, device: torch.device):
    """Slices of ``range(n)`` for one pass: on a CPU, chunks whose work tensors stay in cache
    (2048 to 8192 rows, about 16 MB for the largest); on a GPU, large chunks (fewer launches).
    Tuned with ``benchmarks/bench_ec_scores.py``."""
    if device.type == "cpu":
        rows = min(max((1 << 22) // max(per_row, 1), 2048), 8192)
    else:
        rows = min(max((1 << 27) // max(per_row, 1), 8192), 1 << 17)
    for s in range(0, n, rows):
        yield slice(s, min(n, s + rows))


# --- the EC statistics ----------------------------------------------------------------------------

OPTIONS = {
    "probes": "None (exact: one backward pass per output) or int: random probes estimating G",
    "probe_distribution": "'rademacher' (default) or 'gaussian'",
}


class ECStatistics(NamedTuple):
    """Sums over the data for one Linear layer (float64): ``S0[i] = sum_n G_i``,
    ``S1[i, j] = sum_n G_i a_j``, ``S2[i, j] = sum_n G_i a_j^2``, and the number of samples ``n``."""

    S0: torch.Tensor
    S1: torch.Tensor
    S2: torch.Tensor
    n: int


class _Centred(NamedTuple):
    S0: torch.Tensor  # (out,)
    S1: torch.Tensor  # (out, in): sum G (a - c)
    S2: torch.Tensor | None  # (out, in): sum G (a - c)^2
    c: torch.Tensor  # (in,): the centring
    n: int


def _centred_moments(model, batches, names, generator, probes=None, distribution="rademacher", *, second=True) -> dict[str, _Centred]:
    check_probes(probes, distribution)
    chain = Walker(model)
    stop = chain.index_of(names)[0]
    at = {chain.linear_at[n]: n for n in names}
    acc: dict[int, list] = {}
    centre: dict[int, torch.Tensor] = {}
    n_total = 0
    widths = [chain.weight(t).shape for t in chain.layers.values()]
    # the largest work tensors of a chunk: g (P, rows, out) above the first layer, [a - c, (a - c)^2]
    per_row = max([(probes or widths[-1][0]) * o for o, _ in widths[1:]] + [2 * i for _, i in widths])
    with torch.no_grad():
        for X, _ in batches:
            for rows in row_chunks(X.shape[0], per_row, X.device):
                inputs, y = chain.forward(X[rows])
                if y.ndim != 2:
                    raise SciPruneError(f"the model output must have shape (batch, outputs), got {tuple(y.shape)}")
                B, K = y.shape
                V = cotangents(K, B, probes, distribution, generator, like=y)
                for t, g in chain.backward_factored(inputs, y, V, stop):
                    if t not in at:
                        continue
                    a = inputs[t]
                    G = _sensitivity(chain, g, probes)
                    if t not in acc:
                        centre[t] = a.mean(0)
                        dev = {"device": a.device, "dtype": torch.float64}
                        acc[t] = (torch.zeros(G.shape[-1], **dev), torch.zeros(G.shape[-1], a.shape[-1] * (1 + second), **dev))
                    buf = chain.buffer("c", (a.shape[0], a.shape[1] * (1 + second)), a)
                    _accumulate(*acc[t], G, a, centre[t], second, buf)
                n_total += B
    out = {}
    for t, (S0, S12) in acc.items():
        n_in = centre[t].shape[0]
        out[at[t]] = _Centred(S0, S12[:, :n_in], S12[:, n_in:] if second else None, centre[t].to(torch.float64), n_total)
    return out


def _squares(g: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """sum_p g_p^2 over the leading dimension of ``g`` (P, rows, n), written into ``out`` (rows, n)."""
    G = torch.mul(g[0], g[0], out=out)
    for gp in g[1:]:
        G.addcmul_(gp, gp)
    return G


def _sensitivity(chain: Walker, g: torch.Tensor | Factored, probes) -> torch.Tensor:
    """G (B or 1, out): sum_k g_k^2 (exact) or the mean over the probes of g_p^2.

    At the first requested layer ``g`` comes as factors ``(h @ W) * act'(z)``: with one cotangent,
    product, fused activation backward, square; with several, ``act'(z)^2 sum_p (h_p @ W)^2`` one
    cotangent at a time (the products stay in cache, no (P, B, out) temporary).
    """
    if not isinstance(g, Factored):
        G = _squares(g, chain.buffer("G", g.shape[1:], g))
    else:
        h, W, acts = g
        if h.shape[0] == 1:
            g1 = chain.complete(g)
            G = g1[0].square_() if g1 is not h else g1[0] * g1[0]
        else:
            if W is None:
                G = _squares(h, chain.buffer("G", h.shape[1:], h))
            else:
                G = chain.buffer("G", (h.shape[1], W.shape[1]), h)
                hp = chain.buffer("h", (h.shape[1], W.shape[1]), h)
                G.zero_()
                for p in range(h.shape[0]):
                    G.addcmul_(torch.mm(h[p], W, out=hp), hp)
            for act, z, out in acts:
                G = act.backward(G, z, out, G if G.shape == z.shape else None)  # may broadcast
                G = act.backward(G, z, out, G)
    if probes is not None and probes > 1:
        G.mul_(1.0 / probes)
    return G


def _accumulate(S0, S12, G: torch.Tensor, a: torch.Tensor, c: torch.Tensor, second: bool, buf: torch.Tensor) -> None:
    """S0 += sum_n G; S12 += G^T [a - c, (a - c)^2] (one product; in-place adds promote to float64)."""
    n_in = a.shape[1]
    ac = torch.sub(a, c, out=buf[:, :n_in])
    if second:
        torch.mul(ac, ac, out=buf[:, n_in:])
    if G.shape[0] == 1:  # G constant over the batch (the output layer when exact): an outer product
        g0 = G[0].to(torch.float64)
        S0.add_(a.shape[0] * g0)
        S12.add_(torch.outer(g0, buf.sum(0, dtype=torch.float64)))
    else:
        S0.add_(G.sum(0))
        S12.add_(G.T @ buf)


def ec_statistics(model, batches, names, generator=None, probes=None, distribution="rademacher") -> dict[str, ECStatistics]:
    """``{weight name: ECStatistics(S0 (out,), S1 (out, in), S2 (out, in), n)}`` in float64.

    Args:
        model: an ``nn.Sequential`` of Linear layers and elementwise activations.
        batches: re-iterable of ``(X, Y)`` on the model's device and dtype (``Y`` is not used).
        names: weight names of Linear layers of the chain.
        generator: ``torch.Generator`` for the probes (unused when ``probes`` is None).
        probes: None for exact G (one backward pass per output), or the number of random probes.
    """
    out = {}
    for name, m in _centred_moments(model, batches, names, generator, probes, distribution).items():
        c = m.c[None, :]
        S1 = m.S1 + c * m.S0[:, None]
        S2 = m.S2 + 2.0 * c * m.S1 + c * c * m.S0[:, None]
        out[name] = ECStatistics(m.S0, S1, S2, m.n)
    return out


def _weighted_mean(m: _Centred) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(alive rows (out, 1), 1/S0 (out, 1) or 0, G-weighted mean of a - c (out, in))."""
    alive = (m.S0 > 0)[:, None]
    inv = torch.where(alive, 1.0 / torch.where(alive, m.S0[:, None], 1.0), 0.0)
    return alive, inv, m.S1 * inv


def _shift(W: torch.Tensor, m: _Centred) -> torch.Tensor:
    alive, _, mean = _weighted_mean(m)
    return torch.where(alive, W * (mean + m.c[None, :]), 0.0)


def compensation_shifts(model, batches, names, generator=None, probes=None, distribution="rademacher") -> dict[str, torch.Tensor]:
    """EC bias shifts ``db_ij = W_ij E[G_i a_j] / E[G_i]`` (float64, shaped like each weight).

    Used by ``prune(..., compensate=True)`` to compensate the removals of any criterion. Needs only
    ``S0`` and ``S1``: one product per layer fewer than :func:`ec_statistics`.
    """
    params = dict(model.named_parameters())
    moments = _centred_moments(model, batches, names, generator, probes, distribution, second=False)
    return {n: _shift(params[n].detach().to(torch.float64), moments[n]) for n in names}


def ec_scores(model, batches, names, generator=None, probes=None, distribution="rademacher") -> ScoreResult:
    """Importances ``I`` (the scores) and shifts ``db`` (the bias shifts) of every weight in ``names``."""
    params = dict(model.named_parameters())
    moments = _centred_moments(model, batches, names, generator, probes, distribution)
    scores, shifts = {}, {}
    for n in names:
        W = params[n].detach().to(torch.float64)
        m = moments[n]
        alive, inv, mean = _weighted_mean(m)
        var = (m.S2 * inv - mean * mean).clamp_min(0.0)  # G-weighted variance of a_j
        scores[n] = torch.where(alive, W * W * var * (m.S0[:, None] / m.n), 0.0)
        shifts[n] = _shift(W, m)
    return ScoreResult(scores, shifts)


@register("ec", summary="elimination-compensation: output change after the optimal bias shift (Ballini et al. 2026)",
          needs_data=True, options=OPTIONS)
def ec(model, batches, names, generator, *, probes=None, probe_distribution="rademacher") -> ScoreResult:
    return ec_scores(model, batches, names, generator, probes, probe_distribution)


# --- the batched path: M members at once (sciprune.ensemble.score_ensemble) -------------------------

def batched_output_sensitivity(stack: Stacked, kind: str, probes, distribution: str) -> ScoreResult | None:
    """``ec`` (``kind="ec"``: I and db) or ``taylor-output`` scores of every member, shaped (M, *W).

    The pass above with a member axis (:func:`sciprune.ensemble._batched_stats._ec_moments`): the same
    centred sums ``S0, S1, S2`` per member, then the same formulas. Declines (None) for random probes:
    their per-member draws are reproduced by the per-member loop only.
    """
    check_probes(probes, distribution)
    if probes is not None:
        return None
    from ..ensemble._batched_stats import _ec_moments, _ec_shifts_and_scores  # lazy: ensemble imports criteria

    X, xs, _, _, N = stack.data
    P = stack.params
    mom = _ec_moments(stack.template, P, stack.names, X, xs, stack.M, N, stack.batch_size, second=True)
    pairs = {n: _ec_shifts_and_scores(P[n].to(torch.float64), *mom[n], N, kind) for n in stack.names}
    return ScoreResult({n: pairs[n][0] for n in stack.names},
                       {n: pairs[n][1] for n in stack.names} if kind == "ec" else None)


def batched_compensation_shifts(stack: Stacked) -> dict[str, torch.Tensor]:
    """:func:`compensation_shifts` of every member at once: ``{name: (M, *W)}`` (float64; S0 and S1 only).

    ``stack.data`` must be present; used by ``prune_ensemble(..., compensate=True)`` for any criterion.
    """
    from ..ensemble._batched_stats import _ec_moments, _ec_shifts_and_scores  # lazy: ensemble imports criteria

    X, xs, _, _, N = stack.data
    P = stack.params
    mom = _ec_moments(stack.template, P, stack.names, X, xs, stack.M, N, stack.batch_size, second=False)
    return {n: _ec_shifts_and_scores(P[n].to(torch.float64), *mom[n], N, "shift")[1] for n in stack.names}


@register_batched("ec")
def ec_batched(stack: Stacked, *, probes=None, probe_distribution="rademacher") -> ScoreResult | None:
    """EC's scores and shifts of M members in one batched pass (exact only)."""
    return batched_output_sensitivity(stack, "ec", probes, probe_distribution)
