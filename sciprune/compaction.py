"""Physically remove dead hidden neurons from a chain of Linear layers, keeping the outputs.

For hidden neuron i of layer l (output of ``W_l``, input of ``W_{l+1}``):
- outgoing column ``W_{l+1}[:, i] == 0``: the neuron has no effect; drop it;
- incoming row ``W_l[i, :] == 0``: it outputs the constant ``act(b_l[i])``; fold
  ``W_{l+1}[:, i] * act(b_l[i])`` into ``b_{l+1}`` and drop it.
Dropping neurons can make others dead, so the sweep repeats until nothing changes. Inputs and
outputs are never removed. The result is a new model; the original is left as it was.

A neuron removed at neuron granularity (:mod:`sciprune.neurons`: row, bias entry and next-layer
column masked) has a zero outgoing column, so it is dropped and the outputs are unchanged: its
contribution ``W_{l+1}[:, i] act(b_l[i])`` was already zero.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .masks import get_masks, prunable_names, remove_masks, set_masks
from .models import linear_chain

__all__ = ["compact", "compact_kept", "dead_neurons"]


@torch.no_grad()
def dead_neurons(model: nn.Sequential) -> list[torch.Tensor]:
    """Per hidden layer, a bool tensor marking neurons with all-zero incoming or outgoing weights."""
    lins = linear_chain(model)
    return [
        (lins[l].weight == 0).all(dim=1) | (lins[l + 1].weight == 0).all(dim=0)
        for l in range(len(lins) - 1)
    ]


def compact(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` with dead hidden neurons removed and the same outputs.

    Masks set on the model (on weights and on biases) carry over to the surviving entries. A hidden
    layer keeps at least one neuron (with zero weights) so the chain stays well formed.
    """
    return compact_kept(model)[0]


@torch.no_grad()
def compact_kept(model: nn.Sequential) -> tuple[nn.Sequential, list[torch.Tensor]]:
    """:func:`compact`, and per hidden layer the indices (in ``model``) of the neurons kept, in order:
    hidden neuron j of the result's layer l is neuron ``kept[l][j]`` of ``model``'s. What a caller
    needs to carry per-neuron state (optimiser moments, provenance) over to the smaller network."""
    linear_chain(model)  # a clear error for anything but a Linear/activation chain
    new = copy.deepcopy(model)
    masks = get_masks(new)
    names = prunable_names(new)
    bias_masks = [m._buffers.get("bias_mask") for m in new if isinstance(m, nn.Linear)]
    remove_masks(new)
    positions = [i for i, m in enumerate(new) if isinstance(m, nn.Linear)]
    lins = [new[i] for i in positions]
    children = list(new.children())
    acts = [nn.Sequential(*children[positions[l] + 1 : positions[l + 1]]) for l in range(len(lins) - 1)]
    mask_list = [masks[n] for n in names]
    kept = [torch.arange(lin.out_features, device=lin.weight.device) for lin in lins[:-1]]

    changed = True
    while changed:
        changed = False
        for l in range(len(lins) - 1):
            w_in, b_in, w_out = lins[l].weight, lins[l].bias, lins[l + 1].weight
            no_out = (w_out == 0).all(dim=0)
            const = (w_in == 0).all(dim=1) & ~no_out
            if const.any():
                value = b_in[const] if b_in is not None else torch.zeros(int(const.sum()), dtype=w_in.dtype)
                value = acts[l](value.unsqueeze(0)).squeeze(0)
                shift = w_out[:, const] @ value
                if lins[l + 1].bias is None:
                    lins[l + 1].bias = nn.Parameter(torch.zeros_like(w_out[:, 0]))
                lins[l + 1].bias.add_(shift)
                w_out[:, const] = 0
            dead = no_out | const
            if not dead.any():
                continue
            keep = ~dead
            if not keep.any():  # keep one disconnected neuron so the chain stays valid
                keep[0] = True
                # cutting its weights can kill neurons of the neighbouring layers: sweep again
                changed = changed or bool(w_in[0].any()) or bool(w_out[:, 0].any())
                w_in[0] = 0
                w_out[:, 0] = 0
                if b_in is not None:
                    b_in[0] = 0
            if int(keep.sum()) == w_in.shape[0]:
                continue
            kept[l] = kept[l][keep]
            lins[l] = _slice_linear(lins[l], rows=keep)
            lins[l + 1] = _slice_linear(lins[l + 1], cols=keep)
            mask_list[l] = mask_list[l][keep]
            mask_list[l + 1] = mask_list[l + 1][:, keep]
            if bias_masks[l] is not None:
                bias_masks[l] = bias_masks[l][keep]
            changed = True

    for pos, lin in zip(positions, lins):
        new[pos] = lin
    kept_masks = {n: m for n, m in zip(prunable_names(new), mask_list) if not bool(m.all())}
    kept_masks.update({n[: -len("weight")] + "bias": m for n, m in zip(prunable_names(new), bias_masks)
                 if m is not None and not bool(m.all())})
    set_masks(new, kept_masks)
    return new, kept


def _slice_linear(lin: nn.Linear, *, rows=None, cols=None) -> nn.Linear:
    w = lin.weight.detach()
    b = lin.bias.detach() if lin.bias is not None else None
    if rows is not None:
        w = w[rows]
        b = b[rows] if b is not None else None
    if cols is not None:
        w = w[:, cols]
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    out.weight.copy_(w)
    if b is not None:
        out.bias.copy_(b)
    return out
