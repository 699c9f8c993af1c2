"""The curvature routines' view of a chain of ``nn.Linear`` layers and elementwise activations.

A thin layer over :class:`sciprune.chain.Walker` in the layout the GGN diagonal and K-FAC use:
output cotangents ``V`` (B, P, C) go backwards as ``g <- g W`` through a Linear and
``g <- g * act'(z)`` through an activation, so for every Linear layer ``g[n, p] = J_z(x_n)^T V[n, p]``
with ``J_z = dy/dz`` (z the layer's pre-activation). With ``V`` the columns of the output Hessian's
square root, ``sum_p g g^T`` is the per-sample GGN with respect to ``z``. All products are batched
over samples and cotangents (no per-sample loops).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from ..chain import Walker
from ..errors import SciPruneError

__all__ = ["LinearChain"]


class LinearChain(Walker):
    """The children of a flat ``nn.Sequential`` of Linear layers and elementwise activations.

    ``layers``: child name -> index of every Linear (in order); ``weight_of``/``bias_of``: child name
    -> parameter name (``bias_of`` None for a Linear without bias).
    """

    def __init__(self, model: nn.Module) -> None:
        try:
            super().__init__(model)
        except SciPruneError as e:
            if "not an elementwise activation" not in str(e):
                raise
            raise SciPruneError(f"{e}; use the operators (hvp, ggnvp, hutchinson_diagonal) for other models") from None

    def layers_for(self, param_names) -> list[str]:
        """The layers (child names) owning ``param_names``; error for a parameter outside the chain's Linears."""
        owner = {}
        for c in self.layers:
            owner[self.weight_of[c]] = c
            if self.bias_of[c]:
                owner[self.bias_of[c]] = c
        bad = [n for n in param_names if n not in owner]
        if bad:
            raise SciPruneError(f"{bad} are not weights or biases of the chain's Linear layers; available: {sorted(owner)}")
        return [c for c in self.layers if c in {owner[n] for n in param_names}]

    @torch.no_grad()
    def forward(self, X: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``inputs[t]`` (the tensor entering module t) and the output (B, C), valid until the next call."""
        if X.ndim != 2:
            raise SciPruneError(f"X must have shape (B, features), got {tuple(X.shape)}")
        inputs, h = super().forward(X)
        if h.ndim != 2:
            raise SciPruneError(f"the model output must have shape (B, C), got {tuple(h.shape)}")
        return inputs, h

    @torch.no_grad()
    def backward(self, inputs: list[torch.Tensor], y: torch.Tensor, V: torch.Tensor, stop: int = 0
                 ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(t, g)`` for every Linear ``t >= stop``, last first; ``V``, ``g``: (B, P, features)."""
        for t, g in super().backward(inputs, y, V.transpose(0, 1), stop):
            yield t, g.transpose(0, 1)
