"""Taylor neuron importance (Molchanov, Mallya, Tyree, Frosio & Kautz 2019, "Importance Estimation for
Neural Network Pruning", CVPR): the squared gradient of the mini-batch loss with respect to a gate.

A gate ``g_i = 1`` multiplies the activation ``a_i`` of hidden neuron i (after the activation function,
i.e. the input of the next Linear layer). Removing the neuron sets ``g_i = 0``; the first-order change
of the loss is ``dL/dg_i``, and Molchanov et al.'s best criterion (its form on a gate, "method 22" of
their code) squares it per mini-batch b and averages over mini-batches:

    c_i = mean_b ( dL_b/dg_i )^2,    dL_b/dg_i = sum_{n in b} a_{n,i} dL_b/da_{n,i},

with ``L_b`` the batch-MEAN training loss (MSE mean over samples and outputs, or cross-entropy mean over
samples; :mod:`sciprune.losses`). ``variant="per-example"``: ``c_i = mean_b sum_{n in b} (a_{n,i}
dl_n/da_{n,i})^2`` with ``l_n`` the per-sample loss (:func:`sciprune.losses.value`'s terms summed per
sample). ``normalize=True``: each layer's scores divided by their L2 norm (Molchanov et al. 2017,
"Pruning Convolutional Neural Networks for Resource Efficient Inference"; a layer of zeros stays zero).
Ranking is global by default, which is the selection's ``scope``, not the criterion's.

Mini-batches are the data's (``batch_size`` of :func:`sciprune.scores`, or the batches of an iterable);
``batches`` of them (default 30, Molchanov's ``frequency``) are drawn without replacement with the seed
when there are more, else all are used. With one batch of all rows the score is the squared full-batch
gate gradient, which vanishes at a stationary point of the training loss: give a ``batch_size``.
``shuffle=True``: the rows of ``(X, Y)`` are put in an order drawn with the seed before the batches are
cut (as a shuffling loader would), so that rows stored on a grid do not give batches from short windows.

``a dL/da`` comes from one forward walk and one backward walk of ``dL/dy`` through the chain
(:class:`sciprune.chain.Walker`, no autograd): ``dL/da = (dL/dz_next) W_next``. A removed neuron (row,
bias and next column masked) has ``dL/da = 0`` and scores 0.
"""

from __future__ import annotations

import math

import torch

from .. import losses
from ..batches import Batches
from ..chain import Walker
from ..checks import check_choice, check_positive_int
from ..errors import SciPruneError
from ..neurons import hidden_layers
from ._registry import ScoreResult, register

__all__ = ["VARIANTS", "taylor_neuron", "gate_terms"]

VARIANTS = ("squared", "per-example")
DEFAULT_BATCHES = 30

OPTIONS = {
    "batches": f"int >= 1, default {DEFAULT_BATCHES} (Molchanov's frequency): mini-batches averaged, drawn with "
               "the seed when the data have more, else all",
    "variant": "'squared' (default): (sum_n a dL_b/da)^2 per batch; 'per-example': sum_n (a dl_n/da)^2",
    "normalize": "False (default) or True: divide each layer's scores by their L2 norm (Molchanov 2017)",
    "batch_size": "rows per mini-batch (default: the data's own batches; all rows as one batch for (X, Y))",
    "shuffle": "False (default) or True: cut the mini-batches from (X, Y)'s rows in an order drawn with the seed "
               "(rows stored on a grid otherwise give batches from short time windows)",
}


def _chosen(batches: Batches, k: int, generator: torch.Generator) -> set[int] | None:
    """Indices of the ``k`` mini-batches used (drawn without replacement), or None for all of them."""
    res = batches.resident
    count = math.ceil(res[0].shape[0] / batches.batch_size) if res is not None else sum(1 for _ in batches)
    if count <= k:
        return None
    return {int(i) for i in torch.randperm(count, generator=generator)[:k]}


@torch.no_grad()
def gate_terms(chain: Walker, X: torch.Tensor, Y: torch.Tensor, at: dict[int, str], stop: int, variant: str
               ) -> dict[str, torch.Tensor]:
    """One mini-batch's contribution (float64) per hidden layer: ``(sum_n a dL_b/da)^2`` (``"squared"``)
    or ``sum_n (a dl_n/da)^2`` (``"per-example"``); ``at`` maps the index of the Linear that a layer's
    activations enter to the layer's weight name, ``stop`` the smallest such index."""
    inputs, y = chain.forward(X)
    loss = losses.loss_for_targets(Y)
    T = losses.targets(loss, y, Y)
    V = losses.out_grad(loss, y, T, "mean" if variant == "squared" else "sample_sum")[None]
    out = {}
    for t, g in chain.backward(inputs, y, V, stop):
        if t not in at:
            continue
        ga = torch.mm(g[0], chain.weight(t)).mul_(inputs[t])  # (B, n): a_n * dL/da_n, the gate's per-sample terms
        if variant == "squared":
            out[at[t]] = ga.sum(0, dtype=torch.float64).square_()
        else:
            out[at[t]] = ga.to(torch.float64).square_().sum(0)
    return out


@register("taylor-neuron", summary="(sum_n a dL/da)^2 per mini-batch, averaged: squared gradient of the loss "
          "with respect to a gate after each hidden neuron (Molchanov et al. 2019; neuron granularity)",
          needs_data=True, options=OPTIONS, granularity="neuron")
def taylor_neuron(model, data: Batches, names, generator, /, *, batches=DEFAULT_BATCHES, variant="squared",
                  normalize=False, shuffle=False) -> ScoreResult:
    k = check_positive_int(batches, "batches")
    variant = check_choice(variant, VARIANTS, "variant")
    for name, flag in (("normalize", normalize), ("shuffle", shuffle)):
        if not isinstance(flag, bool):
            raise SciPruneError(f"{name} must be True or False, got {flag!r}")
    if shuffle and data.resident is not None:
        X, Y = data.resident
        order = torch.randperm(X.shape[0], generator=generator).to(X.device)
        data = Batches((X[order], Y[order]), batch_size=data.batch_size)
    chain = Walker(model)
    nxt = {h.weight: h.next_weight for h in hidden_layers(model)}
    at = {chain.linear_at[nxt[n]]: n for n in names}
    stop = min(at)
    chosen = _chosen(data, k, generator)
    total: dict[str, torch.Tensor] = {}
    used = 0
    for b, (X, Y) in enumerate(data):
        if chosen is not None and b not in chosen:
            continue
        for n, c in gate_terms(chain, X, Y, at, stop, variant).items():
            total[n] = total[n].add_(c) if n in total else c
        used += 1
    if not used:  # an iterable that yielded fewer batches than when they were counted
        raise SciPruneError("the data yielded none of the mini-batches drawn for 'taylor-neuron'; "
                            "expected an iterable that yields the same number of batches on every pass")
    scores = {n: total[n] / used for n in names}
    if normalize:
        for n, s in scores.items():
            norm = torch.linalg.vector_norm(s)
            if norm > 0:
                scores[n] = s / norm
    return ScoreResult(scores)
