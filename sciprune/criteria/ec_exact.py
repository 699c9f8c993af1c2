"""The non-linear reference of elimination-compensation: the true output change of each removal.

For every weight ``W_ij`` of layer l: set it to zero, shift ``b_i`` by its EC shift ``db_ij`` (from
:func:`sciprune.criteria.ec.compensation_shifts`), and measure the true mean square output change

    score_ij = E_x[ sum_k (y_k(x; theta) - y_k(x; theta with W_ij = 0, b_i += db_ij))^2 ].

This is the expensive "non-linear" baseline of Ballini et al. (arXiv 2602.20467): one forward pass
per weight, cost ``|W| C_f`` against ``α C_f`` for ``ec``. Its cost is cut by a constant factor,
not in order: the removal changes only ``z_i`` of layer l, by ``delta = db_ij - W_ij a_j``, so layer
l+1 gets the rank-one update ``z' = z + W_{l+1}[:, i] (act(z_i + delta) - act(z_i))`` and only the
layers after it are run in full, for a chunk of weights at once (a batch of shape (weights, samples,
width) in two reused 2 MB work buffers). A weight of the output layer costs O(B); of the layer
before, O(B K). Everything is computed in float64 on a copy of the model (the differences of
outputs would lose digits in float32). Measured on 2 CPU cores: about 0.6 µs per weight and sample
for the 2-40x6-1 tanh surrogate (8 minutes for 103 424 points), 0.27 µs for LeNet-300-100
(``benchmarks/bench_ec_scores.py``). For small networks: ``max_weights`` (default 200 000) guards
against starting hours of work by accident.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..activations import Activation
from ..chain import Walker
from ..errors import SciPruneError
from ._registry import ScoreResult, register
from ._loss_models import EXAMPLES_OPTION, select_examples
from .ec import compensation_shifts

MAX_WEIGHTS = 200_000
_BUDGET = 1 << 18  # elements of a (weights, samples, width) work tensor: cache-sized
_ROWS = 1024  # samples per forward pass of the unperturbed network


def _rest(chain: Walker, start: int, h: torch.Tensor, bufs: list[torch.Tensor]) -> torch.Tensor:
    """Run ``h`` (M, B, n), held in ``bufs[0]``, through the children of ``chain`` from ``start`` on,
    ping-ponging between the two flat work buffers ``bufs``, in place where possible: no fresh
    memory per chunk (page faults cost as much as the work on a CPU)."""
    cur = 0
    for t in range(start, len(chain.modules)):
        m = chain.modules[t]
        act = chain.acts.get(t)
        if act is None:
            M, B, n = h.shape
            cur = 1 - cur
            out = bufs[cur][: M * B * m.out_features].view(M * B, m.out_features)
            if m.bias is None:
                torch.mm(h.view(M * B, n), m.weight.T, out=out)
            else:
                torch.addmm(m.bias, h.view(M * B, n), m.weight.T, out=out)
            h = out.view(M, B, m.out_features)
        elif act.fused == "tanh":
            h = h.tanh_()
        elif act.fused == "relu":
            h = h.relu_()
        else:
            h = act.value(h)
    return h


@register("ec-exact", summary="true output change after removing each weight with its EC bias shift (slow reference)",
          needs_data=True,
          options={"max_weights": f"int, default {MAX_WEIGHTS}: refuse larger models", **EXAMPLES_OPTION})
def ec_exact(model, batches, names, generator, *, max_weights: int = MAX_WEIGHTS, examples=None) -> ScoreResult:
    if isinstance(max_weights, bool) or not isinstance(max_weights, int) or max_weights < 1:
        raise SciPruneError(f"max_weights must be a positive integer, got {max_weights!r}")
    params = dict(model.named_parameters())
    total = sum(params[n].numel() for n in names)
    if total > max_weights:
        raise SciPruneError(
            f"ec-exact runs one forward pass per weight and this model has {total} prunable weights "
            f"(max_weights={max_weights}); pass max_weights={total} to run it anyway, or use 'ec'"
        )
    shifts = compensation_shifts(model, batches, names, generator)
    rows = select_examples(batches, examples, generator)  # after the shifts: None leaves the generator as it was
    model64 = copy.deepcopy(model).to(torch.float64)
    chain = Walker(model64)
    chain.index_of(names)  # a clear error for a name outside the chain
    device = next(model64.parameters()).device
    err = {n: torch.zeros(params[n].numel(), dtype=torch.float64, device=device) for n in names}
    bufs = [torch.empty(_BUDGET, dtype=torch.float64, device=device) for _ in range(2)]
    n_samples = 0
    with torch.no_grad():
        for X, _ in rows:
            for s in range(0, X.shape[0], _ROWS):
                inputs, y = chain.forward(X[s : s + _ROWS].to(torch.float64))
                for name in names:
                    _layer_errors(chain, chain.linear_at[name], inputs, y, shifts[name], err[name], bufs)
            n_samples += X.shape[0]
    scores = {n: (err[n] / n_samples).view_as(params[n]) for n in names}
    return ScoreResult(scores, shifts)


def _layer_errors(chain: Walker, t: int, inputs, y, db: torch.Tensor, out: torch.Tensor, bufs) -> None:
    """Add ``sum_n sum_k (y - y')^2`` for every weight of the Linear at ``t`` to ``out`` (flat)."""
    mods = chain.modules
    W = mods[t].weight
    n_out, n_in = W.shape
    a = inputs[t]  # (B, in)
    z = chain.output_of(t, inputs, y)  # (B, out)
    nxt = next((u for u in range(t + 1, len(mods)) if isinstance(mods[u], nn.Linear)), None)
    post = [chain.acts[u] for u in range(t + 1, nxt if nxt is not None else len(mods))]  # activations after layer t
    B = a.shape[0]
    width = max([y.shape[1]] + [m.out_features for m in mods[t + 1 :] if isinstance(m, nn.Linear)])
    per = max(1, _BUDGET // (B * width))
    if per * B * width > bufs[0].numel():
        bufs[:] = [torch.empty(per * B * width, dtype=torch.float64, device=a.device) for _ in range(2)]
    Wf, dbf = W.reshape(-1), db.reshape(-1)
    for s in range(0, n_out * n_in, per):
        idx = torch.arange(s, min(s + per, n_out * n_in), device=W.device)
        i, j = idx // n_in, idx % n_in
        zi = z[:, i].T  # (M, B)
        delta = dbf[idx, None] - Wf[idx, None] * a[:, j].T  # (M, B): change of z_i
        change = _apply_small(post, zi + delta).sub_(_apply_small(post, zi))  # change of the next layer's input i
        if nxt is None:
            out[idx] += change.square_().sum(1)
            continue
        z_next = chain.output_of(nxt, inputs, y)  # (B, out_next)
        M, n_next = idx.numel(), z_next.shape[1]
        h = bufs[0][: M * B * n_next].view(M, B, n_next)
        torch.addcmul(z_next[None], change[..., None], mods[nxt].weight[:, i].T[:, None, :], out=h)
        d = _rest(chain, nxt + 1, h, bufs).sub_(y)
        out[idx] += d.square_().sum((1, 2))


def _apply_small(acts: list[Activation], h: torch.Tensor) -> torch.Tensor:
    """Elementwise activations on a (weights, samples) tensor."""
    for act in acts:
        h = act.value(h)
    return h
