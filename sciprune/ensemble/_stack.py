"""Stacked parameters of many same-shaped models, and their batched forward pass.

M models of one architecture become one name-keyed dict of tensors of shape ``(M, *p.shape)``
(names as in ``model.named_parameters()``); masks likewise as ``(M, *p.shape)`` booleans. The batched
forward maps inputs ``(M, B, in)`` to outputs ``(M, B, out)``, member ``m`` computed with parameters
``params[name][m]`` only, so the gradient of ``sum_m loss_m`` with respect to ``params[name][m]``
is the gradient of ``loss_m`` alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..errors import SciPruneError
from ..activations import TYPES

__all__ = [
    "architecture_key",
    "group_by_architecture",
    "stack_models",
    "stack_masks",
    "unstack",
    "ensemble_forward",
    "is_plain_chain",
]

# Modules that act elementwise and hold no parameters (sciprune.activations, one list for all):
# applying one to an (M, B, h) tensor is the same as applying it to each member's (B, h) slice.
_ELEMENTWISE = TYPES


def architecture_key(model: nn.Module) -> tuple:
    """Hashable signature: module structure (``repr``), parameter names, shapes, dtype and device.

    Two models with the same key can be stacked and trained together.
    """
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"each model must be a torch.nn.Module, got {type(model).__name__}")
    params = tuple((n, tuple(p.shape), str(p.dtype), str(p.device)) for n, p in model.named_parameters())
    if not params:
        raise SciPruneError("model has no parameters; nothing to train")
    return (repr(model), params)


def group_by_architecture(models: Sequence[nn.Module]) -> list[list[int]]:
    """Indices of ``models`` grouped by :func:`architecture_key`, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(models):
        groups.setdefault(architecture_key(m), []).append(i)
    return list(groups.values())


def check_same_architecture(models: Sequence[nn.Module]) -> None:
    """Raise unless every model has the architecture of the first."""
    if len(models) == 0:
        raise SciPruneError("models must be a non-empty list of modules, got an empty list")
    key0 = architecture_key(models[0])
    for i, m in enumerate(models[1:], start=1):
        if architecture_key(m) != key0:
            shapes0 = [s for _, s, _, _ in key0[1]]
            shapes = [tuple(p.shape) for p in m.parameters()]
            raise SciPruneError(
                f"all members must share one architecture, dtype and device; member {i} differs from member 0 "
                f"(parameter shapes {shapes} vs {shapes0}); use sciprune.ensemble.group_by_architecture "
                "or sciprune.ensemble.fit_many to batch mixed models"
            )


@torch.no_grad()
def stack_models(models: Sequence[nn.Module], *, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """``{name: (M, *shape) tensor}``: copies of every member's parameters stacked along a new dim 0."""
    check_same_architecture(models)
    names = [n for n, _ in models[0].named_parameters()]
    per = [dict(m.named_parameters()) for m in models]
    out = {}
    for n in names:
        t = torch.stack([p[n].detach() for p in per]).contiguous()
        out[n] = t.requires_grad_(requires_grad)
    return out


@torch.no_grad()
def stack_masks(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """``{name: (M, *shape) bool}`` for every parameter that at least one member masks.

    A member without a mask on that parameter gets all-True (nothing pruned), as
    :class:`sciprune.MaskedStep` would do nothing to it.
    """
    out = {}
    for name, p0 in models[0].named_parameters():
        found = mask_buffers(models, name)
        if all(f is None for f in found):
            continue
        out[name] = stack_mask(found, p0)
    return out


def mask_buffers(models: Sequence[nn.Module], name: str) -> tuple[torch.Tensor | None, ...]:
    """Each member's mask buffer of parameter ``name`` (the tensor object itself; None where unmasked)."""
    mod_name, _, attr = name.rpartition(".")
    found = []
    for m in models:
        owner = m.get_submodule(mod_name) if mod_name else m
        found.append(owner._buffers.get(f"{attr}_mask"))
    return tuple(found)


def stack_mask(found: Sequence[torch.Tensor | None], p0: torch.Tensor) -> torch.Tensor:
    """``(M, *p0.shape)`` bool stack of per-member masks; all-True for a member without one."""
    return torch.stack([f.to(torch.bool) if f is not None else torch.ones_like(p0, dtype=torch.bool) for f in found])


@torch.no_grad()
def unstack(params: dict[str, torch.Tensor], models: Sequence[nn.Module]) -> None:
    """Write ``params[name][m]`` into parameter ``name`` of ``models[m]``, in place (identity kept)."""
    for m, model in enumerate(models):
        for name, p in model.named_parameters():
            if name not in params:
                raise SciPruneError(f"stacked parameters have no entry {name!r}; got {sorted(params)}")
            if params[name].shape[0] != len(models):
                raise SciPruneError(
                    f"stacked parameter {name!r} holds {params[name].shape[0]} members, got {len(models)} models"
                )
            p.copy_(params[name][m])


def is_plain_chain(model: nn.Module) -> bool:
    """True for an ``nn.Sequential`` of ``nn.Linear`` layers and parameter-free elementwise activations."""
    if not isinstance(model, nn.Sequential):
        return False
    return all(isinstance(m, (nn.Linear, *_ELEMENTWISE)) for m in model)


def _chain_forward(template: nn.Sequential) -> Callable:
    steps = []
    for name, m in template.named_children():
        if isinstance(m, nn.Linear):
            steps.append(("linear", f"{name}.weight", f"{name}.bias" if m.bias is not None else None))
        else:
            steps.append(("act", m, None))

    def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        for kind, a, b in steps:
            if kind == "linear":
                w = params[a].transpose(1, 2)  # (M, in, out): y = x W^T + b, as nn.Linear
                x = torch.baddbmm(params[b].unsqueeze(1), x, w) if b is not None else torch.bmm(x, w)
            else:
                x = a(x)
        return x

    return forward


def _vmap_forward(template: nn.Module) -> Callable:
    def one(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(template, p, (x,))

    batched = torch.func.vmap(one, in_dims=(0, 0))
    return batched


def ensemble_forward(template: nn.Module, mode: str = "auto") -> Callable:
    """``f(params, x)``: outputs ``(M, B, out)`` of M stacked members for inputs ``(M, B, in)``.

    ``mode="bmm"`` (plain Linear/activation chains only) runs one ``torch.baddbmm`` per layer on
    (M, B, in) x (M, in, out); ``"vmap"`` runs ``torch.func.functional_call`` of ``template`` under
    ``torch.func.vmap`` and works for any model whose forward ``vmap`` supports. ``"auto"`` picks
    ``bmm`` for plain chains. Why: for an MLP ``vmap`` lowers each ``F.linear`` to the same batched
    matmul, so the arithmetic is the same, but the explicit ``baddbmm`` skips vmap's batching-rule
    dispatch and ``functional_call``'s parameter swapping (a fixed cost per op and step that matters at
    the small widths and batches of coordinate networks, more so on a GPU where the kernels are short)
    and fuses the bias addition into the matmul. benchmarks/bench_ensemble.py, CPU, 1 thread, 2-64x4-1
    tanh, batch 1024, M=32: 8.1 (bmm) vs 6.7 (vmap) model-epochs/s; at M=4..16 the two are within
    noise. On CPU about half the time goes to tanh and its backward, the same per element as ``fit``.
    """
    if mode not in ("auto", "bmm", "vmap"):
        raise SciPruneError(f"forward must be 'auto', 'bmm' or 'vmap', got {mode!r}")
    if mode == "auto":
        mode = "bmm" if is_plain_chain(template) else "vmap"
    if mode == "bmm":
        if not is_plain_chain(template):
            raise SciPruneError(
                f"forward='bmm' needs an nn.Sequential of Linear layers and elementwise activations, "
                f"got {type(template).__name__}; use forward='vmap'"
            )
        return _chain_forward(template)
    return _vmap_forward(template)
