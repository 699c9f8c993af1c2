"""The one mask mechanism: unstructured weight masks that hold through any training.

A mask is a boolean tensor (True = kept) stored on the owning module as a *non-persistent*
buffer ``<param>_mask``: no forward hooks, no renamed parameters, the ``state_dict`` keys stay those
of the dense model, and ``copy.deepcopy`` / ``torch.save(model)`` carry the masks along. Pruned
weights are held at exactly zero by two cheap in-place products per optimiser step:
the gradient is masked before the step (so Adam moments of pruned weights stay zero and L2 weight
decay sees a zero weight) and the weight is masked after it (so no optimiser, weight decay or
momentum can revive it). Masks only shrink.

Every change of a mask (:func:`set_masks`, :func:`remove_masks`, hence ``sciprune.prune`` and
``sciprune.apply_plan``) bumps a module-level counter, :func:`mask_version`; :class:`MaskedStep`
compares it (one int compare) at each step and re-reads the masks only when it changed, so masks
set or shrunk during training are held from the next step on.
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
    "mask_version",
]

#: Bumped by every mask change (set or removed, on any model); see :func:`mask_version`.
_VERSION = 0


def mask_version() -> int:
    """A counter bumped by every call that sets or removes a mask (on any model).

    Code that caches masks (as :class:`MaskedStep` does) compares it to decide whether to re-read
    them. Masks written into ``module._buffers`` by hand bypass it.
    """
    return _VERSION


def _bump() -> None:
    global _VERSION
    _VERSION += 1


def prunable_names(model: nn.Module) -> list[str]:
    """Names (as in ``named_parameters``) of the weight matrices of every ``nn.Linear``. Biases excluded."""
    return [f"{mname}.weight" if mname else "weight" for mname, m in model.named_modules() if isinstance(m, nn.Linear)]


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    if not isinstance(name, str):
        raise SciPruneError(f"parameter names must be strings such as {prunable_names(model)[:1]}, got {name!r}")
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
    _check_model(model)
    if names is not None and (isinstance(names, str) or not isinstance(names, (list, tuple))):
        raise SciPruneError(f"names must be a list of parameter names such as {prunable_names(model)[:1]}, got {names!r}")
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

    A mask is combined with any mask already set (logical and): masks only shrink. Masks are bool
    tensors or arrays, or numbers that are all 0 or 1; everything is checked before any mask is set.
    """
    _check_model(model)
    if not isinstance(masks, dict):
        raise SciPruneError(f"masks must be a dict of parameter name -> bool tensor, got {type(masks).__name__}")
    todo = [(name, *_owner(model, name), _as_mask(name, mask)) for name, mask in masks.items()]
    for name, module, attr, mask in todo:
        p = getattr(module, attr)
        if mask.shape != p.shape:
            raise SciPruneError(f"mask for {name!r} has shape {tuple(mask.shape)}; expected {tuple(p.shape)}")
    for name, module, attr, mask in todo:
        p = getattr(module, attr)
        mask = mask.to(device=p.device, dtype=torch.bool)
        old = module._buffers.get(f"{attr}_mask")
        if old is not None:
            mask = mask & old
        module.register_buffer(f"{attr}_mask", mask.clone(), persistent=False)
        p.mul_(mask)
    if todo:
        _bump()


def _as_mask(name: str, mask) -> torch.Tensor:
    """``mask`` as a bool tensor; numbers other than 0 and 1 (or NaN) are refused, not rounded."""
    try:
        t = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(mask)
    except (TypeError, ValueError, RuntimeError):
        raise SciPruneError(f"mask for {name!r} must be a bool tensor or array, got {type(mask).__name__}") from None
    if t.dtype == torch.bool:
        return t
    if t.is_complex() or not bool(((t == 0) | (t == 1)).all()):
        raise SciPruneError(f"mask for {name!r} must be bool (or all 0 and 1), got {t.dtype} values other than 0 and 1")
    return t.to(torch.bool)


def remove_masks(model: nn.Module) -> None:
    """Forget every mask (the weights keep their current values, zeros included)."""
    for module in model.modules():
        for key in [k for k in module._buffers if k.endswith("_mask")]:
            del module._buffers[key]
    _bump()


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
    """Wrap an optimiser so that ``step()`` keeps pruned weights at zero, masks changing or not.

    Use in a user's own loop in place of the optimiser's ``step``::

        step = MaskedStep(optimizer, model)
        loss.backward(); step(); optimizer.zero_grad()

    Each call compares :func:`mask_version` with the one it last saw (an int compare) and, only when
    it changed, re-reads the model's masks (:meth:`refresh`): a mask set or shrunk after the step was
    built (by ``set_masks``, ``apply_plan``, ``prune``, e.g. from a training hook) is held from the
    next step on. The optimiser state of every newly pruned entry is then zeroed so that nothing can
    revive it: each state tensor shaped like the parameter (Adam/AdamW ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``; SGD ``momentum_buffer``; likewise Adagrad, RMSprop, ...) is multiplied by the
    new mask. L-BFGS keeps flat curvature pairs over all parameters, which a mask cannot restrict:
    its whole state (history, direction, step counter) is cleared, so it restarts as at its first step.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, model: nn.Module) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise SciPruneError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        _check_model(model)
        self.optimizer = optimizer
        self.model = model
        self._version = _VERSION
        # Multiplying by a mask in the parameter's own dtype is several times faster than by a bool
        # mask (measured in benchmarks/bench_mask_step.py), so the step keeps float copies.
        self._held = [(p, m, m.to(p.dtype)) for p, m in mask_pairs(model)]
        self.pairs = [(p, f) for p, _, f in self._held]

    def refresh(self) -> bool:
        """Re-read the masks if any changed since the last look; True when this model's changed.

        A parameter's float mask is rebuilt only when its mask buffer was replaced (``set_masks``
        registers a new tensor for every mask it sets), and the optimiser state of that parameter
        is masked (cleared for L-BFGS) at the same time.
        """
        if self._version == _VERSION:
            return False
        self._version = _VERSION
        old = {id(p): (m, f) for p, m, f in self._held}
        held, changed = [], []
        for p, m in mask_pairs(self.model):
            prev = old.get(id(p))
            if prev is not None and prev[0] is m:
                held.append((p, m, prev[1]))
            else:
                f = m.to(p.dtype)
                held.append((p, m, f))
                changed.append((p, f))
        self._held = held
        self.pairs = [(p, f) for p, _, f in held]
        if changed:
            self._mask_state(changed)
        return bool(changed) or len(held) != len(old)

    @torch.no_grad()
    def _mask_state(self, changed: list[tuple[nn.Parameter, torch.Tensor]]) -> None:
        """Zero the optimiser state of the pruned entries of the parameters in ``changed``."""
        if isinstance(self.optimizer, torch.optim.LBFGS):
            self.optimizer.state.clear()
            return
        for p, f in changed:
            for key, v in self.optimizer.state.get(p, {}).items():
                if key != "step" and isinstance(v, torch.Tensor) and v.shape == p.shape:
                    v.mul_(f.to(v.dtype))

    def __call__(self, closure=None):
        if self._version != _VERSION:
            self.refresh()
        if closure is not None:
            def masked_closure():
                loss = closure()
                mask_grads(self.pairs)
                return loss

            loss = self.optimizer.step(masked_closure)
            if self._version != _VERSION:  # a mask set inside the closure (e.g. by a hook)
                self.refresh()
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
    _check_model(model)
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
