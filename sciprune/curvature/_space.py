"""Which coordinates a curvature operator acts on, and flat <-> name-keyed vectors.

A :class:`ParamSpace` is a list of parameter names of a model (all trainable parameters, or those
selected by name or module prefix) with the kept coordinates of each: a parameter carrying a mask
(:func:`sciprune.masks.get_masks`) contributes only its kept entries. Every operator of
:mod:`sciprune.curvature` acts on the flat vector of these coordinates, i.e. on the projected matrix
``P M P`` restricted to the kept coordinates, so pruned weights never appear in an eigenvector, a
trace or a diagonal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from ..errors import SciPruneError
from ..masks import get_masks

__all__ = ["ParamSpace"]


def _select(model: nn.Module, names: Sequence[str] | str | None) -> list[str]:
    params = dict(model.named_parameters())
    if not params:
        raise SciPruneError(f"model must have parameters, got a {type(model).__name__} without any")
    if names is None:
        chosen = [n for n, p in params.items() if p.requires_grad]
        if not chosen:
            raise SciPruneError("model has no trainable parameter (requires_grad=True); pass names=[...] explicitly")
        return chosen
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if not names:
        raise SciPruneError("names must be None or a non-empty list of parameter names or module prefixes, got []")
    unmatched = [e for e in names if not any(n == e or n.startswith(e + ".") for n in params)]
    if unmatched:
        raise SciPruneError(
            f"names must be parameter names or module prefixes of the model, got {unmatched} matching nothing; "
            f"use names from model.named_parameters(): {list(params)}"
        )
    return [n for n in params if any(n == e or n.startswith(e + ".") for e in names)]


class ParamSpace:
    """The kept coordinates of some parameters of a model, in ``named_parameters`` order.

    Args:
        model: the network; its current masks are read once, at construction.
        names: None (every parameter with ``requires_grad``), or parameter names and/or module
            prefixes: ``"linear2"`` selects ``linear2.weight`` and ``linear2.bias``.
        masks: if True (default), masked-out entries are left out of the space.

    Attributes: ``names`` (tuple), ``shapes`` (name -> torch.Size), ``kept`` (name -> 1-D long tensor
    of kept flat indices, or None when every entry is kept), ``dim`` (number of coordinates).
    """

    def __init__(self, model: nn.Module, names: Sequence[str] | str | None = None, *, masks: bool = True) -> None:
        chosen = _select(model, names)
        params = dict(model.named_parameters())
        all_masks = get_masks(model) if masks else {}
        self.names: tuple[str, ...] = tuple(chosen)
        self.shapes: dict[str, torch.Size] = {n: params[n].shape for n in chosen}
        self.kept: dict[str, torch.Tensor | None] = {}
        self.device = params[chosen[0]].device
        self.dtype = params[chosen[0]].dtype
        sizes = []
        for n in chosen:
            m = all_masks.get(n)
            if m is None or bool(m.all()):
                self.kept[n] = None
                sizes.append(params[n].numel())
            else:
                idx = torch.nonzero(m.reshape(-1), as_tuple=True)[0].to(self.device)
                self.kept[n] = idx
                sizes.append(int(idx.numel()))
        self.sizes: tuple[int, ...] = tuple(sizes)
        self.dim = int(sum(sizes))
        if self.dim == 0:
            raise SciPruneError(f"the parameters {list(chosen)} are entirely pruned; choose names with kept weights")

    def __repr__(self) -> str:
        return f"ParamSpace(names={list(self.names)}, dim={self.dim})"

    def values(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The current (detached) values of the space's parameters, full shape."""
        params = dict(model.named_parameters())
        return {n: params[n].detach() for n in self.names}

    def flatten(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """name -> full-shape tensor  ->  1-D tensor of the kept coordinates (length ``dim``)."""
        missing = [n for n in self.names if n not in tensors]
        if missing:
            raise SciPruneError(f"the vector must have an entry for every name of the space, missing {missing}")
        parts = []
        for n in self.names:
            t = tensors[n]
            if t.shape != self.shapes[n]:
                raise SciPruneError(f"entry {n!r} must have shape {tuple(self.shapes[n])}, got {tuple(t.shape)}")
            t = t.reshape(-1)
            parts.append(t if self.kept[n] is None else t[self.kept[n]])
        return torch.cat(parts)

    def unflatten(self, vec: torch.Tensor) -> dict[str, torch.Tensor]:
        """1-D tensor of length ``dim``  ->  name -> full-shape tensor, zero at the pruned entries."""
        if vec.ndim != 1 or vec.shape[0] != self.dim:
            raise SciPruneError(f"a flat vector of this space must have shape ({self.dim},), got {tuple(vec.shape)}")
        out = {}
        for n, part in zip(self.names, torch.split(vec, self.sizes)):
            idx = self.kept[n]
            if idx is None:
                out[n] = part.reshape(self.shapes[n])
            else:
                full = part.new_zeros(self.shapes.get(n).numel())
                full[idx] = part
                out[n] = full.reshape(self.shapes[n])
        return out

    def project(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero the pruned entries (``P v`` in name-keyed form)."""
        return self.unflatten(self.flatten(tensors))

    def flat_index(self) -> torch.Tensor:
        """Positions of the space's coordinates in the concatenation of its parameters' full flattenings."""
        parts, offset = [], 0
        for n in self.names:
            size = self.shapes[n].numel()
            idx = self.kept[n]
            parts.append(torch.arange(size, device=self.device) + offset if idx is None else idx + offset)
            offset += size
        return torch.cat(parts)
