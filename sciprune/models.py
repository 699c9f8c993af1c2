"""Fully-connected networks: regressors, classifiers and LeNet-300-100.

Every model is a plain ``nn.Sequential`` chain of ``nn.Linear`` layers and activation modules, so a
user can build the same thing by hand and every sciprune routine (criteria, masks, compaction,
saving) works on it. Linear layers are named ``linear0 ... linearL`` and activations ``act0 ...``.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Sequence

import numpy as np
import torch
from torch import nn

from .checks import memory_bytes
from .errors import SciPruneError

__all__ = ["Sine", "ACTIVATIONS", "MLP", "lenet_300_100", "build_model", "describe", "linear_chain", "n_weights", "scaled_widths",
           "NOT_ELEMENTWISE", "is_elementwise_activation", "device_and_dtype",
           "check_model_size", "memory_bytes"]


class Sine(nn.Module):
    """Elementwise sin(w0 * x) (SIREN-style activation; w0 = 1 by default)."""

    def __init__(self, w0: float = 1.0) -> None:
        super().__init__()
        self.w0 = float(w0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(self.w0 * x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}"


ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sin": Sine}


def _activation_name(module: nn.Module) -> str | None:
    """The name under which :func:`build_model` rebuilds ``module`` exactly, or None."""
    if isinstance(module, Sine) and module.w0 != 1.0:
        return None
    if isinstance(module, nn.GELU) and module.approximate != "none":
        return None
    for name, cls in ACTIVATIONS.items():
        if type(module) is cls:
            return name
    return None


class MLP(nn.Sequential):
    """y = L_L(act(... act(L_0 x))): ``in_features -> widths... -> out_features``.

    Args:
        in_features: input size (2 for a coordinate network u(x, t)).
        widths: hidden layer sizes, e.g. ``[40] * 6`` for PDEBench's 2-40x6-1 network.
        out_features: output size (1 for u, number of classes for a classifier).
        activation: one of ``tanh``, ``relu``, ``gelu``, ``sin``.
        seed: if given, initialise the weights from this seed without touching the global RNG.
    """

    def __init__(
        self,
        in_features: int,
        widths: Sequence[int],
        out_features: int,
        activation: str = "tanh",
        *,
        seed: int | None = None,
    ) -> None:
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise SciPruneError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
            raise SciPruneError(f"widths must be a list of hidden-layer sizes like [40, 40], got {widths!r}")
        sizes = [in_features, *widths, out_features]
        if any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 1 for s in sizes):
            raise SciPruneError(f"layer sizes must be positive integers, got {sizes}")
        sizes = [int(s) for s in sizes]
        if seed is not None:
            from .checks import check_seed

            seed = check_seed(seed)
        check_model_size(sizes)
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        # A seed initialises from a private fork of the RNG (global state untouched); without one the
        # global RNG is used and advanced, as nn.Linear does, so unseeded models differ.
        with torch.random.fork_rng(devices=[]) if seed is not None else contextlib.nullcontext():
            if seed is not None:
                torch.manual_seed(int(seed))
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
                layers[f"linear{i}"] = nn.Linear(n_in, n_out)
                if i < len(sizes) - 2:
                    layers[f"act{i}"] = ACTIVATIONS[activation]()
        super().__init__(layers)
        self.activation = activation

    @property
    def sizes(self) -> list[int]:
        lins = linear_chain(self)
        return [lins[0].in_features] + [lin.out_features for lin in lins]


#: Bytes a parameter costs while training: float32 value, gradient, two Adam moments (x 4 B each).
TRAINING_BYTES_PER_PARAMETER = 16


def check_model_size(sizes: Sequence[int], *, bytes_per_parameter: int = TRAINING_BYTES_PER_PARAMETER) -> int:
    """The parameter count of a chain with layer ``sizes``; refused (before anything is allocated) when
    training it would need more memory than the machine has: params x ``bytes_per_parameter``."""
    n = sum(int(a) * int(b) + int(b) for a, b in zip(sizes[:-1], sizes[1:]))
    need, have = n * bytes_per_parameter, memory_bytes()
    if have and need > have:
        raise SciPruneError(
            f"layer sizes {list(sizes)} give {n:,} parameters, about {need / 2**30:.1f} GiB to train "
            f"({bytes_per_parameter} B each), more than this machine's {have / 2**30:.1f} GiB; use smaller widths"
        )
    return n


def lenet_300_100(in_features: int = 784, n_classes: int = 10, *, seed: int | None = None) -> MLP:
    """LeNet-300-100 (LeCun et al. 1998): in -> 300 -> 100 -> classes with ReLU."""
    return MLP(in_features, [300, 100], n_classes, "relu", seed=seed)


# Modules that are never elementwise although they hold no parameters.
NOT_ELEMENTWISE = (nn.Softmax, nn.LogSoftmax, nn.Softmin, nn.Flatten, nn.Unflatten)


def is_elementwise_activation(module: nn.Module) -> bool:
    """True for a module without parameters or children that is not one of :data:`NOT_ELEMENTWISE`:
    what the hand-written chain passes (EC scores, curvature) may treat as ``a = act(z)`` per entry."""
    return not (isinstance(module, NOT_ELEMENTWISE) or any(True for _ in module.parameters())
                or any(True for _ in module.children()))


def device_and_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and dtype of the model's first parameter; an error for a model without parameters."""
    p = next(model.parameters(), None)
    if p is None:
        raise SciPruneError("model has no parameters")
    return p.device, p.dtype


def linear_chain(model: nn.Module) -> list[nn.Linear]:
    """The Linear layers of a sequential chain, in order; error if the model is not such a chain."""
    if not isinstance(model, nn.Sequential):
        raise SciPruneError(
            f"model must be an nn.Sequential chain of Linear layers and activations, got {type(model).__name__}"
        )
    lins = [m for m in model if isinstance(m, nn.Linear)]
    if not lins:
        raise SciPruneError("model has no nn.Linear layer")
    return lins


def describe(model: nn.Module) -> dict:
    """JSON description of a Linear/activation chain: ``{"kind": "mlp", "sizes": [...], "activation": ...}``.

    Works for :class:`MLP` and for any hand-built ``nn.Sequential`` of ``nn.Linear`` and one kind of
    activation from :data:`ACTIVATIONS` (activations between every pair of Linear layers, none after
    the last), which is what :func:`build_model` can rebuild.
    """
    lins = linear_chain(model)
    acts: list[str] = []
    prev_linear = False
    for m in model:
        if isinstance(m, nn.Linear):
            if prev_linear:
                raise SciPruneError("two Linear layers without an activation between them cannot be described")
            prev_linear = True
        else:
            name = _activation_name(m)
            if name is None:
                raise SciPruneError(
                    f"unsupported module {m!r} in the chain; supported activations: {sorted(ACTIVATIONS)} "
                    "with default settings (Sine(w0=1), GELU(approximate='none'))"
                )
            acts.append(name)
            prev_linear = False
    if not isinstance(model[-1], nn.Linear):
        raise SciPruneError("the chain must end with a Linear layer")
    if len(set(acts)) > 1:
        raise SciPruneError(f"mixed activations {sorted(set(acts))} are not supported")
    if len(acts) != len(lins) - 1:
        raise SciPruneError("expected exactly one activation between consecutive Linear layers")
    for a, b in zip(lins[:-1], lins[1:]):
        if a.out_features != b.in_features:
            raise SciPruneError(f"layer sizes do not chain: {a.out_features} -> {b.in_features}")
    sizes = [lins[0].in_features] + [lin.out_features for lin in lins]
    return {"kind": "mlp", "sizes": sizes, "activation": acts[0] if acts else "tanh"}


def build_model(spec: dict, *, seed: int | None = None) -> MLP:
    """Rebuild a model from :func:`describe`'s dictionary (weights freshly initialised)."""
    if not isinstance(spec, dict):
        raise SciPruneError(f"model spec must be a dict like {{'kind': 'mlp', 'sizes': [2, 40, 1]}}, got {spec!r}")
    if spec.get("kind") != "mlp":
        raise SciPruneError(f"model kind must be 'mlp', got {spec.get('kind')!r}")
    sizes = spec.get("sizes")
    if not isinstance(sizes, (list, tuple)) or len(sizes) < 2:
        raise SciPruneError(f"model sizes need at least input and output, got {sizes}")
    return MLP(sizes[0], sizes[1:-1], sizes[-1], spec.get("activation", "tanh"), seed=seed)


def n_weights(sizes: Sequence[int]) -> int:
    """Number of Linear weights (biases excluded) of a chain with layer ``sizes``."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def scaled_widths(in_features: int, widths: Sequence[int], out_features: int, target: int) -> list[int]:
    """Hidden widths ``round(s * w)`` (at least 1) with as close to ``target`` weights as possible.

    Used for the baseline "dense network with as many weights as the pruned one, trained from scratch":
    the weight count is quadratic in the common factor ``s``, solved in closed form then rounded.
    """
    if not widths:
        return []
    w = np.asarray(widths, dtype=np.float64)
    a = float(np.sum(w[:-1] * w[1:]))
    b = float(in_features * w[0] + w[-1] * out_features)
    s = (-b + np.sqrt(b * b + 4 * a * target)) / (2 * a) if a > 0 else target / b
    best = None
    for scale in (s * 0.97, s, s * 1.03):
        cand = [max(1, int(round(scale * x))) for x in widths]
        err = abs(n_weights([in_features, *cand, out_features]) - target)
        if best is None or err < best[0]:
            best = (err, cand)
    return best[1]
