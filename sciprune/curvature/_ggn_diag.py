"""The exact diagonal of the generalised Gauss-Newton matrix of a Linear/activation chain.

For a Linear layer ``z = W a + b`` and the output-Hessian square root ``H_n = sum_c S_c S_c^T``
(``_loss``): ``G = (1/N) sum_n J_n^T H_n J_n`` has the diagonal
``diag_W[i, j] = (1/N) sum_n (sum_c g_nci^2) a_nj^2`` and ``diag_b[i] = (1/N) sum_n sum_c g_nci^2``
with ``g_nc = J_z(x_n)^T S_c`` (BackPACK's ``DiagGGNExact``, Dangel, Kunstner & Hennig 2020). For MSE
``S_c = sqrt(2/C) e_c``; for cross-entropy ``S_c = sqrt(p_c)(e_c - p)``, where the GGN is also the
Fisher. Cost: one forward pass and C cotangents backwards, one matrix product per layer per batch.
This is the curvature of Optimal Brain Damage (LeCun, Denker & Solla 1990).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._chain import LinearChain
from ._loss import check_loss, out_hessian_sqrt, prepare, targets
from ._space import ParamSpace

__all__ = ["ggn_diagonal"]


def ggn_diagonal(model: nn.Module, data, *, loss: str, names: Sequence[str] | str | None = None,
                 batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Exact ``diag(G)`` as name -> tensor for the weights and biases of the chain's Linear layers.

    Args:
        model: an ``nn.Sequential`` of ``nn.Linear`` and elementwise activations (e.g. ``sciprune.MLP``).
        data: ``(X, Y)``, a TaskData or a re-iterable of batches.
        loss: ``"mse"`` or ``"cross_entropy"``.
        names: parameters or layer prefixes (None: every trainable parameter, all of which must
            belong to the chain's Linear layers). Pruned entries are returned as zero.
    """
    check_loss(loss)
    space = ParamSpace(model, names)
    chain = LinearChain(model)
    layers = chain.layers_for(space.names)
    stop = chain.layers[layers[0]]
    at = {chain.layers[c]: c for c in layers}
    dW: dict[str, torch.Tensor] = {}
    db: dict[str, torch.Tensor] = {}
    N = 0
    for X, Y in prepare(model, data, batch_size):
        inputs, y = chain.forward(X)
        targets(loss, y, Y)
        B = X.shape[0]
        V = out_hessian_sqrt(loss, y).expand(B, -1, -1)
        for t, g in chain.backward(inputs, y, V, stop):
            if t not in at:
                continue
            c = at[t]
            g2 = (g * g).sum(1)  # (B, out)
            a = inputs[t]
            w = g2.T @ (a * a)
            dW[c] = w if c not in dW else dW[c] + w
            s = g2.sum(0)
            db[c] = s if c not in db else db[c] + s
        N += B
    out = {}
    for c in layers:
        out[chain.weight_of[c]] = dW[c] / N
        if chain.bias_of[c]:
            out[chain.bias_of[c]] = db[c] / N
    return space.project({n: out[n] for n in space.names})
