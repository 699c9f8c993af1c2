"""One walker over a chain of ``nn.Linear`` layers and elementwise activations, for one model or a
stacked ensemble, without autograd graphs.

A chain ``y = L_T(... act(L_1 x))`` (an ``nn.Sequential`` like :class:`sciprune.MLP`) is walked
forwards once, recording the tensor entering every child (``inputs[t]``: the input ``a_l`` of a
Linear, its pre-activation ``z_l = W_l a_l + b_l`` as the input of the next child); a stack of output
cotangents ``V`` then goes backwards, ``g <- g W`` through a Linear and ``g <- g * act'(z)`` through
an activation (the reverse-mode rule, e.g. Griewank & Walther, *Evaluating Derivatives*, 2008,
ch. 3), so at every Linear ``g[p, n] = J_z(x_n)^T V[p, n]`` with ``J_z = dy/dz_l`` per sample. With
``V`` the identity rows that gives every per-sample Jacobian ``dy/dz_l``; with ``V = dL/dy`` the
gradient of the loss with respect to ``z_l``; with random probes an unbiased sketch.

Layouts: one model: ``x`` (B, in), ``V`` (P, B or 1, K); a stack of M members (parameters
``{name: (M, *shape)}`` as :func:`sciprune.ensemble.stack_models` makes them): ``x`` (M, B, in),
``V`` (M or 1, P, B or 1, K). A cotangent constant over the samples (size 1 along B) stays so up to
the first activation. Work tensors are kept from call to call (on a CPU a fresh temporary of a few MB
costs page faults comparable to the product that fills it), so what :meth:`Walker.forward` and
:meth:`Walker.backward` give is valid until the next call.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import torch
from torch import nn

from .activations import Activation, activation_of
from .errors import SciPruneError
from .models import is_elementwise_activation, linear_chain

__all__ = ["Factored", "Walker", "broadcast_shape"]


class Factored(NamedTuple):
    """The cotangent of a Linear's output left as factors: ``g = act_1'(...) * (h @ W)`` with the
    elementwise ``acts`` ``[(activation, z, out), ...]`` applied in order (``W`` None: ``g = h``)."""

    h: torch.Tensor
    W: torch.Tensor | None
    acts: list[tuple[Activation, torch.Tensor, torch.Tensor]]


def broadcast_shape(g: torch.Tensor, z: torch.Tensor) -> tuple[int, ...]:
    """The shape of ``g * z``."""
    return tuple(torch.broadcast_shapes(g.shape, z.shape))


class Walker:
    """The children of a flat ``nn.Sequential``: Linear layers and elementwise activations.

    Args:
        model: the chain (for a stack: the template whose structure all members share).
        params: None (the model's own parameters), or stacked ``{name: (M, *shape)}`` parameters.

    Attributes: ``modules`` (children in order), ``acts`` (index -> :class:`Activation` of every
    activation), ``linear_at`` (weight name -> index), ``layers`` (child name -> index of every
    Linear), ``weight_of``/``bias_of`` (child name -> parameter name; ``bias_of`` None without bias),
    ``stacked`` (a member axis leads every tensor).
    """

    def __init__(self, model: nn.Module, params: dict[str, torch.Tensor] | None = None) -> None:
        linear_chain(model)  # a Sequential with at least one Linear, or a clear error
        self.modules: list[nn.Module] = []
        self.acts: dict[int, Activation] = {}
        self.layers: dict[str, int] = {}
        for t, (child, m) in enumerate(model.named_children()):
            if isinstance(m, nn.Linear):
                self.layers[child] = t
            elif is_elementwise_activation(m):
                self.acts[t] = activation_of(m)
            else:
                raise SciPruneError(
                    f"module {child!r} ({type(m).__name__}) is not an elementwise activation; this routine "
                    "needs an nn.Sequential of nn.Linear layers and elementwise activations (like sciprune.MLP)"
                )
            self.modules.append(m)
        self.weight_of = {c: f"{c}.weight" for c in self.layers}
        self.bias_of = {c: (f"{c}.bias" if self.modules[t].bias is not None else None) for c, t in self.layers.items()}
        self.linear_at = {self.weight_of[c]: t for c, t in self.layers.items()}
        self.stacked = params is not None
        self._W: dict[int, torch.Tensor] = {}
        self._b: dict[int, torch.Tensor | None] = {}
        for c, t in self.layers.items():
            src = params if params is not None else None
            self._W[t] = src[self.weight_of[c]] if src is not None else self.modules[t].weight
            b = self.bias_of[c]
            self._b[t] = None if b is None else (src[b] if src is not None else self.modules[t].bias)
        self._buffers: dict[tuple, torch.Tensor] = {}

    # ---------------------------------------------------------------------------------- helpers
    def weight(self, t: int) -> torch.Tensor:
        """The weight of the Linear at index ``t``: (out, in), or (M, out, in) for a stack."""
        return self._W[t]

    def index_of(self, names) -> list[int]:
        """Sorted indices of the Linear layers whose weights are ``names``; error for any other name."""
        missing = [n for n in names if n not in self.linear_at]
        if missing:
            raise SciPruneError(
                f"{missing} are not weights of Linear layers that are direct children of the chain; "
                f"available: {sorted(self.linear_at)}"
            )
        return sorted(self.linear_at[n] for n in names)

    def bind(self, params: dict[str, torch.Tensor]) -> Walker:
        """Point a stacked walker at other stacked parameters ``{name: (M, *shape)}`` (e.g. the next
        chunk of parameter points of a loss landscape), keeping its work buffers; returns ``self``."""
        if not self.stacked:
            raise SciPruneError("bind needs a walker built for stacked parameters (Walker(model, params))")
        for c, t in self.layers.items():
            self._W[t] = params[self.weight_of[c]]
            b = self.bias_of[c]
            self._b[t] = None if b is None else params[b]
        return self

    def buffer(self, key, shape, like: torch.Tensor) -> torch.Tensor:
        """A work tensor kept from call to call (its contents are overwritten by the next one)."""
        shape = tuple(shape)
        k = (key, shape, like.dtype, like.device)
        buf = self._buffers.get(k)
        if buf is None:
            if len(self._buffers) > 64:  # batches of many different sizes: start afresh
                self._buffers.clear()
            buf = self._buffers[k] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return buf

    @staticmethod
    def output_of(t: int, inputs: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """The output of child ``t`` (for a Linear: its pre-activation ``z``)."""
        return inputs[t + 1] if t + 1 < len(inputs) else y

    # ---------------------------------------------------------------------------------- forward
    @torch.no_grad()
    def forward(self, x: torch.Tensor, *, upto: int | None = None, reuse: bool = True) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``inputs[t]`` (the tensor entering child ``t``) and the output ``y`` of the chain.

        ``upto``: stop after child ``upto`` (``y`` is then its output). ``reuse=False`` gives fresh
        tensors (for a caller that keeps them across calls). Linear: ``z = a W^T + b`` as ``nn.Linear``
        (one ``addmm``, or ``baddbmm`` over the members of a stack).
        """
        inputs: list[torch.Tensor] = []
        h = x
        last = len(self.modules) - 1 if upto is None else upto
        for t in range(last + 1):
            inputs.append(h)
            buf = (lambda shape: self.buffer(("f", t), shape, h)) if reuse else (lambda shape: None)
            if t in self.acts:
                act = self.acts[t]
                h = act.forward(h, buf(h.shape)) if act.fused in ("tanh", "relu") else act.forward(h)
                continue
            W, b = self._W[t], self._b[t]
            if self.stacked:
                out = buf((h.shape[0], h.shape[1], W.shape[1]))
                Wt = W.transpose(1, 2)
                h = torch.baddbmm(b.unsqueeze(1), h, Wt, out=out) if b is not None else torch.bmm(h, Wt, out=out)
            elif h.ndim == 2:
                out = buf((h.shape[0], W.shape[0]))
                h = torch.mm(h, W.T, out=out) if b is None else torch.addmm(b, h, W.T, out=out)
            else:
                h = nn.functional.linear(h, W, b)
        return inputs, h

    # --------------------------------------------------------------------------------- backward
    def _through_linear(self, g: torch.Tensor, W: torch.Tensor, key) -> torch.Tensor:
        """``g @ W``: (P, B, out) x (out, in), or for a stack (M or 1, P, B, out) x (M, out, in) as one
        bmm with the cotangents folded into the rows (no copies of W)."""
        if not self.stacked:
            return torch.matmul(g, W, out=self.buffer(key, (*g.shape[:-1], W.shape[1]), g))
        M, P, B = W.shape[0], g.shape[1], g.shape[2]
        if B == 1:
            return torch.matmul(g, W.unsqueeze(1))  # (1 or M, P, 1, out) @ (M, 1, out, in): tiny
        gf = g.expand(M, *g.shape[1:]).reshape(M, P * B, g.shape[3])
        res = self.buffer(key, (M, P * B, W.shape[2]), g)
        return torch.bmm(gf, W, out=res).view(M, P, B, W.shape[2])

    def _z(self, z: torch.Tensor) -> torch.Tensor:
        """A recorded activation input aligned with the cotangents' layout (member, cotangent, sample)."""
        return z.unsqueeze(1) if self.stacked else z

    def apply_acts(self, g: torch.Tensor, acts, key) -> torch.Tensor:
        """``g`` through the elementwise ``acts`` of a :class:`Factored` (``g * act'(z)`` each)."""
        for i, (act, z, out) in enumerate(acts):
            zz, oo = self._z(z), self._z(out)
            g = act.backward(g, zz, oo, self.buffer((key, i % 2), broadcast_shape(g, zz), g))
        return g

    @torch.no_grad()
    def backward_factored(self, inputs: list[torch.Tensor], y: torch.Tensor, V: torch.Tensor, stop: int
                          ) -> Iterator[tuple[int, torch.Tensor | Factored]]:
        """Yield ``(t, g)`` for every Linear ``t >= stop``, last first: ``g`` is the cotangent of its
        output ``z_t`` for the output cotangents ``V``, which the caller must not change.

        At ``stop``, where nothing is propagated further, the caller gets ``g`` as a
        :class:`Factored` instead, so it can form e.g. ``sum_p g_p^2`` one cotangent at a time.
        """
        h, W, acts = V, None, []
        j = 0  # buffers alternate between consecutive layers (a product never writes into its input)
        for t in range(len(self.modules) - 1, -1, -1):
            if t in self.acts:
                acts.append((self.acts[t], inputs[t], self.output_of(t, inputs, y)))
                continue
            if t <= stop:
                yield t, Factored(h, W, acts)
                return
            j += 1
            g = h if W is None else self._through_linear(h, W, ("m", j % 2))
            g = self.apply_acts(g, acts, ("b", j % 2))
            h, W, acts = g, self._W[t], []
            yield t, g

    @torch.no_grad()
    def complete(self, f: Factored, key="last") -> torch.Tensor:
        """The cotangent ``g`` that a :class:`Factored` stands for (in a work buffer)."""
        g = f.h if f.W is None else self._through_linear(f.h, f.W, (key, "m"))
        return self.apply_acts(g, f.acts, (key, "b"))

    @torch.no_grad()
    def backward(self, inputs: list[torch.Tensor], y: torch.Tensor, V: torch.Tensor, stop: int = 0
                 ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(t, g)`` for every Linear ``t >= stop``, last first, ``g = dL/dz_t`` for ``V = dL/dy``:
        (P, B or 1, out_t), or (M or 1, P, B or 1, out_t) for a stack. Valid until the next step."""
        for t, g in self.backward_factored(inputs, y, V, stop):
            yield t, (self.complete(g) if isinstance(g, Factored) else g)
