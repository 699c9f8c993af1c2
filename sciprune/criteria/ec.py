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

import math
from typing import NamedTuple

import torch
from torch import nn

from ..errors import SciPruneError
from ..models import Sine, is_elementwise_activation, linear_chain
from ._registry import ScoreResult, register

__all__ = ["ECStatistics", "compensation_shifts", "ec_scores", "ec_statistics"]

# --- passes through a Linear/activation chain, without autograd ---------------------------------
# For every sample: the input ``a`` of each Linear layer (one recorded forward pass) and the
# cotangents ``g = sum_k v_k dy_k/dz`` of its pre-activation for a stack of output cotangents v
# (identity rows: exact; random probes), from ``g_{l-1} = (g_l W_l) * act'(z_{l-1})``: matrix
# products over a chunk of samples, no hooks, no autograd graph, no per-sample loops.


class Chain:
    """The children of a flat ``nn.Sequential``: Linear layers and elementwise activations.

    ``modules``: the children in order; ``linear_at``: parameter name of a Linear weight -> its index
    in ``modules``; ``index``: the sorted indices of the requested Linear layers. One instance serves
    one pass over the data: it keeps work buffers from chunk to chunk, so what :meth:`forward` and
    :meth:`backward` return is valid until the next call.
    """

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        linear_chain(model)  # a Sequential with at least one Linear, or a clear error
        self.modules: list[nn.Module] = []
        self.linear_at: dict[str, int] = {}
        for t, (child_name, m) in enumerate(model.named_children()):
            if isinstance(m, nn.Linear):
                self.linear_at[f"{child_name}.weight"] = t
            elif not is_elementwise_activation(m):
                raise SciPruneError(
                    f"module {child_name!r} ({type(m).__name__}) is not an elementwise activation; this criterion "
                    "needs an nn.Sequential of nn.Linear layers and elementwise activations (like sciprune.MLP)"
                )
            self.modules.append(m)
        missing = [n for n in names if n not in self.linear_at]
        if missing:
            raise SciPruneError(
                f"{missing} are not weights of Linear layers that are direct children of the chain; "
                f"available: {sorted(self.linear_at)}"
            )
        self.index = sorted(self.linear_at[n] for n in names)
        self._buffers: dict[tuple, torch.Tensor] = {}

    def buffer(self, key, shape, like: torch.Tensor) -> torch.Tensor:
        """A work tensor kept from chunk to chunk (its contents are overwritten by the next chunk).

        On a CPU a fresh temporary of a few MB costs page faults comparable to the elementwise op
        or product that fills it, so the passes write into reused buffers.
        """
        shape = tuple(shape)
        k = (key, shape, like.dtype, like.device)
        buf = self._buffers.get(k)
        if buf is None:
            if len(self._buffers) > 64:  # batches of many different sizes: start afresh
                self._buffers.clear()
            buf = self._buffers[k] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Inputs of every module (``inputs[t]`` enters ``modules[t]``) and the network output.

        The tensors live in buffers that the next call overwrites.
        """
        inputs = []
        h = x
        for t, m in enumerate(self.modules):
            inputs.append(h)
            kind = type(m)
            if kind is nn.Linear and h.ndim == 2:
                out = self.buffer(("f", t), (h.shape[0], m.out_features), h)
                h = torch.mm(h, m.weight.T, out=out) if m.bias is None else torch.addmm(m.bias, h, m.weight.T, out=out)
            elif kind is nn.Tanh:
                h = torch.tanh(h, out=self.buffer(("f", t), h.shape, h))
            elif kind is nn.ReLU:
                h = torch.clamp_min(h, 0, out=self.buffer(("f", t), h.shape, h))
            elif getattr(m, "inplace", False):
                h = m(h.clone())  # keep the recorded input intact
            else:
                h = m(h)
        return inputs, h

    def pre_activation(self, t: int, inputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """The output ``z`` of the Linear at index ``t``."""
        return inputs[t + 1] if t + 1 < len(inputs) else y

    @torch.no_grad()
    def backward(self, inputs: list[torch.Tensor], y: torch.Tensor, V: torch.Tensor):
        """Yield ``(t, g, lazy, acts)`` for every Linear ``t`` from the last to the first requested one.

        ``V`` (P, B or 1, K) stacks P output cotangents; ``g`` (P, B or 1, out_t) is the cotangent of
        the layer's pre-activation, ``g[p, n, i] = sum_k V[p, n, k] dy_k(x_n)/dz_t,i``, which the
        caller must not change (it is propagated further). At the first requested layer, where
        nothing is propagated further, ``g`` is None and the caller gets its factors instead:
        ``lazy = (g_next, W_next)`` with ``h = g_next @ W_next`` (or ``(V, None)``: ``h = V`` at the
        output layer) and ``acts``, the elementwise modules in between as ``(module, z, out)``, with
        ``g = h * act'(z)``; so ``sum_p g_p^2 = act'(z)^2 sum_p h_p^2`` can be formed one cotangent
        at a time, without a (P, B, out) temporary. A cotangent constant over the batch (exact mode)
        stays of size 1 along it up to the first activation, so the output layer costs nothing.
        """
        lazy, acts = (V, None), []
        stop = self.index[0]
        j = 0  # buffers alternate between consecutive layers (a product never writes into its input)
        for t in range(len(self.modules) - 1, -1, -1):
            m = self.modules[t]
            if isinstance(m, nn.Linear):
                if t <= stop:
                    yield t, None, lazy, acts
                    return
                g, W = lazy
                j += 1
                if W is not None:
                    g = torch.matmul(g, W, out=self.buffer(("m", j % 2), (*g.shape[:-1], W.shape[1]), g))
                for i, (act, z, out) in enumerate(acts):
                    g = activation_backward(act, g, z, out, self.buffer(("b", j % 2, i % 2), broadcast(g, z), g))
                lazy, acts = (g, m.weight), []
                yield t, g, None, None
            else:
                acts.append((m, inputs[t], inputs[t + 1] if t + 1 < len(inputs) else y))


def broadcast(g: torch.Tensor, z: torch.Tensor) -> tuple[int, int, int]:
    """The shape of ``g * z`` for ``g`` (P, B or 1, n) and ``z`` (B, n)."""
    return (g.shape[0], z.shape[0], z.shape[1])


def activation_backward(m: nn.Module, g: torch.Tensor, z: torch.Tensor, out: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
    """``g * act'(z)`` (``g`` may carry extra leading dimensions); fused kernels where torch has them.

    ``z`` is the activation's input and ``out`` its output; ``res`` (a tensor of the broadcast shape,
    may be ``g`` itself) receives the result if given.
    """
    kind = type(m)
    if kind is nn.Tanh:
        return torch.ops.aten.tanh_backward(g, out) if res is None else torch.ops.aten.tanh_backward.grad_input(g, out, grad_input=res)
    if kind is nn.ReLU:
        if res is None:
            return torch.ops.aten.threshold_backward(g, out, 0)
        return torch.ops.aten.threshold_backward.grad_input(g, out, 0, grad_input=res)
    if kind is nn.Sigmoid:
        return torch.ops.aten.sigmoid_backward(g, out) if res is None else torch.ops.aten.sigmoid_backward.grad_input(g, out, grad_input=res)
    d = activation_derivative(m, z, out)
    return g * d if res is None else torch.mul(g, d, out=res)


def activation_derivative(m: nn.Module, z: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``act'(z)`` elementwise, from ``z`` and ``out = act(z)``; closed forms for the usual ones.

    Other modules are taken to be elementwise and differentiated by one forward-mode product.
    """
    kind = type(m)
    if kind is nn.Tanh:
        return 1.0 - out * out
    if kind is nn.ReLU:
        return (out > 0).to(z.dtype)
    if kind is Sine:
        return m.w0 * torch.cos(m.w0 * z)
    if kind is nn.GELU and m.approximate == "none":
        return 0.5 * (1.0 + torch.erf(z * (1.0 / math.sqrt(2.0)))) + z * torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
    if kind is nn.Sigmoid:
        return out * (1.0 - out)
    if kind is nn.Identity:
        return torch.ones_like(z)
    return torch.func.jvp(m, (z,), (torch.ones_like(z),))[1]


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
    chain = Chain(model, list(names))
    at = {chain.linear_at[n]: n for n in names}
    acc: dict[int, list] = {}
    centre: dict[int, torch.Tensor] = {}
    n_total = 0
    widths = [m.weight.shape for m in chain.modules if isinstance(m, torch.nn.Linear)]
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
                for t, g, lazy, acts in chain.backward(inputs, y, V):
                    if t not in at:
                        continue
                    a = inputs[t]
                    G = _sensitivity(chain, t, g, lazy, acts, probes)
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


def _sensitivity(chain: Chain, t: int, g, lazy, acts, probes) -> torch.Tensor:
    """G (B or 1, out): sum_k g_k^2 (exact) or the mean over the probes of g_p^2."""
    if g is not None:
        G = _squares(g, chain.buffer("G", g.shape[1:], g))
    else:
        h, W = lazy  # the first requested layer: g = (h @ W) * act'(z)
        if h.shape[0] == 1:  # one cotangent: product, fused activation backward, square
            g = h if W is None else torch.matmul(h, W, out=chain.buffer("h", (*h.shape[:-1], W.shape[1]), h))
            for i, (act, z, out) in enumerate(acts):
                g = activation_backward(act, g, z, out, chain.buffer(("b", i % 2), broadcast(g, z), g))
            G = g[0].square_() if g is not h else g[0] * g[0]
        else:  # act'(z)^2 sum_p (h_p @ W)^2, one cotangent at a time (the products stay in cache)
            if W is None:
                G = _squares(h, chain.buffer("G", h.shape[1:], h))
            else:
                G = chain.buffer("G", (h.shape[1], W.shape[1]), h)
                hp = chain.buffer("h", (h.shape[1], W.shape[1]), h)
                G.zero_()
                for p in range(h.shape[0]):
                    G.addcmul_(torch.mm(h[p], W, out=hp), hp)
            for act, z, out in acts:
                G = activation_backward(act, G, z, out, G if G.shape == z.shape else None)  # may broadcast
                G = activation_backward(act, G, z, out, G)
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
