"""The one apply step of every plan (:func:`sciprune.apply_plan`): a :class:`~sciprune.criteria.Solution`
(keep-masks and float64 parameter updates) written into the model, and what it is made from.

A scoring criterion's compensation becomes updates of the biases (:func:`bias_updates`: each bias
entry gets the elimination-compensation shifts of the weights removed from its row, summed in
float64); a joint criterion's solver gives its updates itself (:func:`masks_only` drops them). A
joint plan moves the weights it was made on, so it records them (:func:`model_state`) and is refused
on a model that no longer has them (:func:`check_planned_on`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .criteria import Solution, Solver
from .errors import SciPruneError
from .masks import get_masks, set_masks

__all__ = ["bias_updates", "write_solution", "model_state", "check_planned_on", "masks_only"]


def bias_updates(model: nn.Module, shifts: dict[str, torch.Tensor], removed: dict[str, torch.Tensor]
                 ) -> dict[str, torch.Tensor]:
    """``{bias name: delta}``: each bias entry gets the shifts of the weights removed from its row,
    summed in float64 (elimination-compensation as a parameter update)."""
    params = dict(model.named_parameters())
    out = {}
    for name, shift in shifts.items():  # every layer checked before anything changes
        if name not in removed:
            continue
        bias_name = name.rsplit(".", 1)[0] + ".bias" if "." in name else "bias"
        if bias_name not in params:
            raise SciPruneError(
                f"compensation needs a bias for {name!r}, but the layer has none; use compensate=False "
                "or give the layer a bias"
            )
        out[bias_name] = (shift.to(torch.float64) * removed[name].to(torch.float64)).sum(dim=1)
    return out


@torch.no_grad()
def write_solution(model: nn.Module, solution: Solution) -> None:
    """The one apply step: each update (float64) is rounded once to its parameter's dtype and added, then
    the keep-masks are set (:func:`sciprune.set_masks`: the removed weights are zeroed, masks only shrink).
    ``solution`` must fit ``model`` (checked by the callers)."""
    params = dict(model.named_parameters())
    for name, delta in solution.updates.items():
        p = params[name]
        p.add_(delta.to(device=p.device, dtype=p.dtype))
    set_masks(model, solution.keep)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and mask of ``model`` (copies): what a joint plan was solved for."""
    state = {n: p.detach().clone() for n, p in model.named_parameters()}
    state.update({f"{n} (mask)": m for n, m in get_masks(model).items()})
    return state


def check_planned_on(model: nn.Module, prune_plan) -> None:
    """A joint plan moves the weights it was made on: refuse a model whose parameters or masks differ."""
    if prune_plan.planned_on is None:
        return
    params = {n: p.detach() for n, p in model.named_parameters()}
    now = {**params, **{f"{n} (mask)": m for n, m in get_masks(model).items()}}
    same = now.keys() == prune_plan.planned_on.keys() and all(
        t.shape == now[n].shape and t.dtype == now[n].dtype and torch.equal(t.to(now[n].device), now[n])
        for n, t in prune_plan.planned_on.items())
    if not same:
        raise SciPruneError(f"the {prune_plan.method!r} plan chooses and compensates for the weights and masks it was "
                            "made on, and this model's differ (pruned or trained since?); make a new plan for it "
                            "with sciprune.plan")


@dataclass(frozen=True)
class _MasksOnly:
    """A joint solver's choice without its compensation: its keep-masks, no updates."""

    solve: Solver

    def __call__(self, ratio: float, scope: str) -> Solution:
        return Solution(self.solve(ratio, scope).keep, {})


def masks_only(solve: Solver | None) -> Solver | None:
    """``solve`` with its updates dropped (``compensate=False`` of a joint criterion); None stays None."""
    return None if solve is None or isinstance(solve, _MasksOnly) else _MasksOnly(solve)
