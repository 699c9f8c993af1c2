"""The one mask mechanism: unstructured weight masks that hold through any training.

A mask is a boolean tensor (True = kept) stored on the owning module as a *non-persistent*
buffer ``<param>_mask``: no forward hooks, no renamed parameters, the ``state_dict`` keys stay those
of the dense model, and ``copy.deepcopy`` / ``torch.save(model)`` carry the masks along. Pruned
weights are held at exactly zero by two cheap in-place products per optimiser step:
the gradient is masked before the step (so Adam moments of pruned weights stay zero and L2 weight
decay sees a zero weight) and the weight is masked after it (so no optimiser, weight decay or
momentum can revive it). Masks only shrink.
"""

from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from .errors import SciPruneError

__all__ = [
    "prunable_names",
    "get_masks",
    "set_masks",
    "remove_masks",
    "mask_pairs",
    "enforce",
    "mask_grads",
    "MaskedStep",
    "sparsity",
]


def prunable_names(model: nn.Module) -> list[str]:
    """Names (as in ``named_parameters``) of the weight matrices of every ``nn.Linear``. Biases excluded."""
    return [f"{mname}.weight" if mname else "weight" for mname, m in model.named_modules() if isinstance(m, nn.Linear)]


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    mod_name, _, attr = name.rpartition(".")
    try:
        module = model.get_submodule(mod_name) if mod_name else model
    except AttributeError:
        raise SciPruneError(f"model has no parameter {name!r}; prunable parameters: {prunable_names(model)}") from None
    if not isinstance(getattr(module, attr, None), nn.Parameter):
        raise SciPruneError(f"model has no parameter {name!r}; prunable parameters: {prunable_names(model)}")
    return module, attr


def mask_pairs(model: nn.Module) -> list[tuple[nn.Parameter, torch.Tensor]]:
    """(parameter, mask) for every masked parameter, in module order."""
    pairs = []
    for module in model.modules():
        for attr, p in module.named_parameters(recurse=False):
            m = module._buffers.get(f"{attr}_mask")
            if m is not None:
                pairs.append((p, m))
    return pairs


def get_masks(model: nn.Module, *, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Boolean masks (True = kept) for the prunable weights; all-True where none is set."""
    out = {}
    for name in names if names is not None else prunable_names(model):
        module, attr = _owner(model, name)
        m = module._buffers.get(f"{attr}_mask")
        p = getattr(module, attr)
        out[name] = m.clone() if m is not None else torch.ones_like(p, dtype=torch.bool)
    return out


@torch.no_grad()
def set_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Attach ``masks`` (name -> bool tensor shaped like the parameter) and zero the pruned weights.

    A mask is combined with any mask already set (logical and): masks only shrink.
    """
    for name, mask in masks.items():
        module, attr = _owner(model, name)
        p = getattr(module, attr)
        mask = torch.as_tensor(mask)
        if mask.shape != p.shape:
            raise SciPruneError(f"mask for {name!r} has shape {tuple(mask.shape)}; expected {tuple(p.shape)}")
        mask = mask.to(device=p.device, dtype=torch.bool)
        old = module._buffers.get(f"{attr}_mask")
        if old is not None:
            mask = mask & old
        module.register_buffer(f"{attr}_mask", mask.clone(), persistent=False)
        p.mul_(mask)


def remove_masks(model: nn.Module) -> None:
    """Forget every mask (the weights keep their current values, zeros included)."""
    for module in model.modules():
        for key in [k for k in module._buffers if k.endswith("_mask")]:
            del module._buffers[key]


@torch.no_grad()
def enforce(model_or_pairs) -> None:
    """Set every masked weight to exactly zero (call after each optimiser step)."""
    pairs = _pairs(model_or_pairs)
    if pairs:
        torch._foreach_mul_([p for p, _ in pairs], [m for _, m in pairs])


@torch.no_grad()
def mask_grads(model_or_pairs) -> None:
    """Zero the gradients of masked weights (call before each optimiser step)."""
    pairs = [(p, m) for p, m in _pairs(model_or_pairs) if p.grad is not None]
    if pairs:
        torch._foreach_mul_([p.grad for p, _ in pairs], [m for _, m in pairs])


def _pairs(model_or_pairs) -> list[tuple[nn.Parameter, torch.Tensor]]:
    return mask_pairs(model_or_pairs) if isinstance(model_or_pairs, nn.Module) else model_or_pairs


class MaskedStep:
    """Wrap an optimiser so that ``step()`` keeps pruned weights at zero.

    Use in a user's own loop in place of the optimiser's ``step``::

        step = MaskedStep(optimizer, model)
        loss.backward(); step(); optimizer.zero_grad()

    The (parameter, mask) pairs are gathered once at construction; build a new one after pruning.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        self.optimizer = optimizer
        # Multiplying by a mask in the parameter's own dtype is several times faster than by a bool
        # mask (measured in benchmarks/bench_mask_step.py), so the step keeps float copies.
        self.pairs = [(p, m.to(p.dtype)) for p, m in mask_pairs(model)]

    def __call__(self, closure=None):
        if closure is not None:
            def masked_closure():
                loss = closure()
                mask_grads(self.pairs)
                return loss

            loss = self.optimizer.step(masked_closure)
        else:
            mask_grads(self.pairs)
            loss = self.optimizer.step()
        enforce(self.pairs)
        return loss


def _iter_linear(model: nn.Module) -> Iterator[tuple[str, nn.Linear]]:
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            yield name, m


@torch.no_grad()
def sparsity(model: nn.Module) -> dict:
    """Fraction of exactly-zero entries read from the live tensors.

    Returns ``{"layers": {weight_name: {"zeros", "total", "sparsity"}}, "weights": {...} (global over
    all Linear weights), "biases": {...} (counted apart)}``.
    """
    layers = {}
    wz = wt = bz = bt = 0
    for name, lin in _iter_linear(model):
        key = f"{name}.weight" if name else "weight"
        z, t = int((lin.weight == 0).sum()), lin.weight.numel()
        layers[key] = {"zeros": z, "total": t, "sparsity": z / t}
        wz, wt = wz + z, wt + t
        if lin.bias is not None:
            bz, bt = bz + int((lin.bias == 0).sum()), bt + lin.bias.numel()
    return {
        "layers": layers,
        "weights": {"zeros": wz, "total": wt, "sparsity": wz / wt if wt else 0.0},
        "biases": {"zeros": bz, "total": bt, "sparsity": bz / bt if bt else 0.0},
    }
