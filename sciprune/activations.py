"""One definition of every elementwise activation sciprune supports, with its first two derivatives.

For an activation ``out = act(z)`` applied elementwise, :func:`activation_of` gives an
:class:`Activation`: its ``name``, ``value(z)``, ``d1(z, out) = act'(z)`` and
``d2(z, out) = act''(z)`` (closed forms, using ``out`` where that is cheaper, e.g. tanh' = 1 - out^2),
``backward(g, z, out)`` = ``g * act'(z)`` (torch's fused backward kernels for tanh, ReLU and sigmoid,
the ones autograd itself runs, so the numbers are autograd's), and ``piecewise_linear`` (act'' = 0
almost everywhere: the ReLU family and the identity; for ReLU the state phi'(z) = [z > 0] is what
PSP-entropy counts). The closed forms are the textbook derivatives, checked against
``torch.autograd`` (double backward for the second) in ``tests/test_activations.py``.

Supported: tanh, relu, leaky_relu, gelu (exact and tanh-approximate), sin (:class:`sciprune.models.Sine`,
sin(w0 z)), sigmoid, silu, softplus, elu, identity. Any other parameter-free elementwise module
(:func:`sciprune.models.is_elementwise_activation`) gets derivatives by forward-mode autodiff.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .errors import SciPruneError
from .models import Sine, is_elementwise_activation

__all__ = ["Activation", "SUPPORTED", "TYPES", "activation_of", "is_supported"]

Fn1 = Callable[[torch.Tensor], torch.Tensor]
Fn2 = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_C_TANH = math.sqrt(2.0 / math.pi)  # GELU's tanh approximation: tanh(c (z + k z^3))
_K_TANH = 0.044715


@dataclass(frozen=True)
class Activation:
    """An elementwise activation: ``value(z)``, ``d1(z, out)``, ``d2(z, out)`` with ``out = value(z)``.

    ``module`` is the module it was made from (``value`` calls it). ``fused`` names torch's fused
    backward kernel (``"tanh"``, ``"relu"``, ``"sigmoid"``) used by :meth:`backward`, or None.
    """

    name: str
    module: nn.Module
    d1: Fn2
    d2: Fn2
    piecewise_linear: bool
    fused: str | None = None

    def value(self, z: torch.Tensor) -> torch.Tensor:
        """``act(z)``."""
        return self.module(z)

    def forward(self, z: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """``act(z)``, written into ``out`` (same shape as ``z``) where torch has an out= kernel.

        The result never aliases ``z`` (an in-place module gets a copy), so ``z`` can be kept.
        """
        if out is not None and self.fused == "tanh":
            return torch.tanh(z, out=out)
        if out is not None and self.fused == "relu":
            return torch.clamp_min(z, 0, out=out)
        return self.module(z.clone() if getattr(self.module, "inplace", False) else z)

    def backward(self, g: torch.Tensor, z: torch.Tensor, out: torch.Tensor, res: torch.Tensor | None = None) -> torch.Tensor:
        """``g * act'(z)`` (``g`` may carry extra leading dimensions and broadcast against ``z``).

        ``out = act(z)``; ``res`` (a tensor of the broadcast shape, may be ``g`` itself) receives the
        result if given. The fused kernels compute exactly what autograd computes.
        """
        aten = torch.ops.aten
        if self.fused == "tanh":
            return aten.tanh_backward(g, out) if res is None else aten.tanh_backward.grad_input(g, out, grad_input=res)
        if self.fused == "relu":
            return aten.threshold_backward(g, out, 0) if res is None else aten.threshold_backward.grad_input(g, out, 0, grad_input=res)
        if self.fused == "sigmoid":
            return aten.sigmoid_backward(g, out) if res is None else aten.sigmoid_backward.grad_input(g, out, grad_input=res)
        d = self.d1(z, out)
        return g * d if res is None else torch.mul(g, d, out=res)


def _gelu(m: nn.GELU) -> tuple[Fn2, Fn2]:
    if m.approximate == "none":
        # act = z Phi(z): act' = Phi(z) + z phi(z), act'' = phi(z) (2 - z^2)
        def d1(z, out):
            return 0.5 * (1.0 + torch.erf(z * (1.0 / _SQRT_2))) + z * torch.exp(-0.5 * z * z) * _INV_SQRT_2PI

        def d2(z, out):
            return torch.exp(-0.5 * z * z) * _INV_SQRT_2PI * (2.0 - z * z)

        return d1, d2

    # act = z (1 + t) / 2, t = tanh(u), u = c (z + k z^3): act' = (1 + t)/2 + z (1 - t^2) u' / 2,
    # act'' = (1 - t^2) u' - z t (1 - t^2) u'^2 + z (1 - t^2) u'' / 2, u' = c (1 + 3 k z^2), u'' = 6 c k z
    def parts(z):
        t = torch.tanh(_C_TANH * (z + _K_TANH * z * z * z))
        return t, 1.0 - t * t, _C_TANH * (1.0 + 3.0 * _K_TANH * z * z)

    def d1a(z, out):
        t, s, du = parts(z)
        return 0.5 * (1.0 + t) + 0.5 * z * s * du

    def d2a(z, out):
        t, s, du = parts(z)
        return s * du - z * t * s * du * du + 0.5 * z * s * (6.0 * _C_TANH * _K_TANH * z)

    return d1a, d2a


def _softplus(m: nn.Softplus) -> tuple[Fn2, Fn2]:
    beta, threshold = float(m.beta), float(m.threshold)

    def d1(z, out):  # sigmoid(beta z), 1 above the threshold (where softplus returns z)
        return torch.where(z * beta > threshold, torch.ones_like(z), torch.sigmoid(z * beta))

    def d2(z, out):
        s = torch.sigmoid(z * beta)
        return torch.where(z * beta > threshold, torch.zeros_like(z), beta * s * (1.0 - s))

    return d1, d2


def _autodiff(m: nn.Module) -> tuple[Fn2, Fn2]:
    """Derivatives of an elementwise module by forward-mode products with the ones vector."""

    def d1(z, out):
        return torch.func.jvp(m, (z,), (torch.ones_like(z),))[1]

    def d2(z, out):
        def first(u):
            return torch.func.jvp(m, (u,), (torch.ones_like(u),))[1]

        return torch.func.jvp(first, (z,), (torch.ones_like(z),))[1]

    return d1, d2


def _zero(z, out):
    return torch.zeros_like(z)


def activation_of(m: nn.Module) -> Activation:
    """The :class:`Activation` of module ``m`` (its parameters, e.g. Sine's w0, taken into account).

    Raises:
        SciPruneError: ``m`` is not a parameter-free elementwise module.
    """
    kind = type(m)
    if kind is nn.Tanh:
        return Activation("tanh", m, lambda z, o: 1.0 - o * o, lambda z, o: -2.0 * o * (1.0 - o * o), False, "tanh")
    if kind is nn.ReLU:
        return Activation("relu", m, lambda z, o: (o > 0).to(z.dtype), _zero, True, "relu")
    if kind is nn.LeakyReLU:
        s = float(m.negative_slope)
        return Activation("leaky_relu", m, lambda z, o: torch.where(z > 0, torch.ones_like(z), torch.full_like(z, s)), _zero, True)
    if kind is nn.GELU:
        return Activation("gelu", m, *_gelu(m), False)
    if kind is Sine:
        w0 = m.w0
        return Activation("sin", m, lambda z, o: w0 * torch.cos(w0 * z), lambda z, o: -(w0 * w0) * torch.sin(w0 * z), False)
    if kind is nn.Sigmoid:
        return Activation("sigmoid", m, lambda z, o: o * (1.0 - o), lambda z, o: o * (1.0 - o) * (1.0 - 2.0 * o), False, "sigmoid")
    if kind is nn.SiLU:
        # act = z s, s = sigmoid(z): act' = s (1 + z (1 - s)), act'' = s (1 - s) (2 + z (1 - 2 s))
        def silu_d1(z, o):
            s = torch.sigmoid(z)
            return s * (1.0 + z * (1.0 - s))

        def silu_d2(z, o):
            s = torch.sigmoid(z)
            return s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))

        return Activation("silu", m, silu_d1, silu_d2, False)
    if kind is nn.Softplus:
        return Activation("softplus", m, *_softplus(m), False)
    if kind is nn.ELU:
        alpha = float(m.alpha)  # act = z (z > 0), alpha (e^z - 1) else: act' = act'' + [z > 0], act'' = (out + alpha) [z <= 0]
        return Activation("elu", m, lambda z, o: torch.where(z > 0, torch.ones_like(z), o + alpha),
                          lambda z, o: torch.where(z > 0, torch.zeros_like(z), o + alpha), False)
    if kind is nn.Identity:
        return Activation("identity", m, lambda z, o: torch.ones_like(z), _zero, True)
    if not is_elementwise_activation(m):
        raise SciPruneError(
            f"{kind.__name__} is not an elementwise activation; supported: {', '.join(SUPPORTED)} "
            "or any other module without parameters that acts elementwise"
        )
    return Activation(kind.__name__.lower(), m, *_autodiff(m), False)


#: Names of the activations with closed-form derivatives.
SUPPORTED = ("tanh", "relu", "leaky_relu", "gelu", "sin", "sigmoid", "silu", "softplus", "elu", "identity")
#: Their module types (parameter-free, elementwise: safe to apply to stacked (M, B, n) tensors).
TYPES = (nn.Tanh, nn.ReLU, nn.LeakyReLU, nn.GELU, Sine, nn.Sigmoid, nn.SiLU, nn.Softplus, nn.ELU, nn.Identity)


def is_supported(m: nn.Module) -> bool:
    """True for a module of one of the types with closed-form derivatives (see :data:`SUPPORTED`)."""
    return isinstance(m, TYPES)
