"""Passes through a chain of ``nn.Linear`` layers and elementwise activations, without autograd graphs.

For an ``nn.Sequential`` like :class:`sciprune.models.MLP` one forward pass records the input ``a``
of every module; a stack of output cotangents ``V`` (B, P, C) then goes backwards as
``g <- g W`` through a Linear and ``g <- g * act'(z)`` through an activation, so for every Linear
layer ``g[n, p] = J_z(x_n)^T V[n, p]`` with ``J_z = dy/dz`` (z the layer's pre-activation). With
``V`` the columns of the output Hessian's square root, ``sum_p g g^T`` is the per-sample GGN with
respect to ``z``. All products are batched over samples and cotangents (no per-sample loops).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn
from torch.func import jvp

from ..errors import SciPruneError
from ..models import is_elementwise_activation, linear_chain

__all__ = ["LinearChain"]


class LinearChain:
    """The children of a flat ``nn.Sequential`` of Linear layers and elementwise activations.

    ``layers``: child name -> index of every Linear (in order); ``weight_of``/``bias_of``: child name
    -> parameter name (``bias_of`` None for a Linear without bias).
    """

    def __init__(self, model: nn.Module) -> None:
        linear_chain(model)
        self.modules: list[nn.Module] = []
        self.layers: dict[str, int] = {}
        for t, (child, m) in enumerate(model.named_children()):
            if isinstance(m, nn.Linear):
                self.layers[child] = t
            elif not is_elementwise_activation(m):
                raise SciPruneError(
                    f"module {child!r} ({type(m).__name__}) is not an elementwise activation; this routine needs an "
                    "nn.Sequential of nn.Linear layers and elementwise activations (like sciprune.MLP); "
                    "use the operators (hvp, ggnvp, hutchinson_diagonal) for other models"
                )
            self.modules.append(m)
        self.weight_of = {c: f"{c}.weight" for c in self.layers}
        self.bias_of = {c: (f"{c}.bias" if self.modules[t].bias is not None else None) for c, t in self.layers.items()}

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
        """``inputs[t]`` (the tensor entering module t) and the output (B, C)."""
        if X.ndim != 2:
            raise SciPruneError(f"X must have shape (B, features), got {tuple(X.shape)}")
        inputs, h = [], X
        for m in self.modules:
            inputs.append(h)
            h = m(h.clone() if getattr(m, "inplace", False) else h)
        if h.ndim != 2:
            raise SciPruneError(f"the model output must have shape (B, C), got {tuple(h.shape)}")
        return inputs, h

    @torch.no_grad()
    def backward(self, inputs: list[torch.Tensor], V: torch.Tensor, stop: int) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(t, g)`` for every Linear ``t >= stop``, last first; ``V``, ``g``: (B, P, features)."""
        G = V
        for t in range(len(self.modules) - 1, stop - 1, -1):
            m = self.modules[t]
            if isinstance(m, nn.Linear):
                yield t, G
                if t > stop:
                    G = G @ m.weight
            else:
                z = inputs[t]
                d = jvp(m, (z,), (torch.ones_like(z),))[1]  # act'(z), elementwise
                G = G * d[:, None, :]
