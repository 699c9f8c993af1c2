"""``obs-layer``: exact layer-wise Optimal Brain Surgeon as a joint criterion (chooses and compensates).

Frantar & Alistarh, "Optimal Brain Compression" (NeurIPS 2022), with the bias in the compensation
(:mod:`sciprune.obs_layer`, ``docs/obs.md``). For each Linear layer, ``H = 2 x^T x / n`` over its inputs
``x = [a, 1]``; each row removes its weights greedily by ``w_j^2 / [H^-1]_jj`` and moves the rest of the
row and its bias by ``-(w_j / [H^-1]_jj) H^-1[:, j]``; the removals are allocated across rows (and layers,
for the global scope) by their recorded loss increases.

Which weights go decides how the others move, so the method does not score-then-select: ``compute``
does the ratio-free part once (the Hessians, their inverses and every row's greedy trace,
:func:`sciprune.obs_layer.prepare_obs`) and returns its solver, which :func:`sciprune.apply_plan` calls
for each ratio (masks and updates of the weights and biases, applied by the one apply step). Its scores
(``sciprune.scores``) are the loss increase recorded at each weight's removal in its row's order.
"""

from __future__ import annotations

from ..obs_layer import DEFAULT_DAMP, LayerOBS, prepare_obs
from ._registry import ScoreResult, Solution, register

__all__ = ["OPTIONS", "LayerSolver"]

OPTIONS = {
    "damp": f"relative dampening of the layers' input Hessians H (+ damp * mean(diag H) on the diagonal); "
            f"default {DEFAULT_DAMP:g} (OBC's 0 is exact but refuses a singular H)",
}


class LayerSolver:
    """The solver of an ``obs-layer`` plan: ``solve(ratio, scope)`` -> :class:`Solution` of the prepared
    :class:`~sciprune.obs_layer.LayerOBS` (masks of its layers, updates of their weights and biases)."""

    def __init__(self, prepared: LayerOBS) -> None:
        self.prepared = prepared

    def __call__(self, ratio: float, scope: str) -> Solution:
        result = self.prepared.solve(ratio, scope)
        return Solution(result.masks, result.updates)


@register("obs-layer", summary="exact layer-wise Optimal Brain Surgeon (Frantar & Alistarh 2022): chooses and "
                               "compensates jointly, moving each row's remaining weights and bias",
          needs_data=True, options=OPTIONS, joint=True)
def obs_layer(model, batches, names, generator, *, damp=DEFAULT_DAMP) -> ScoreResult:
    prepared = prepare_obs(model, batches, damp=damp, names=names)
    device = {n: p.device for n, p in model.named_parameters()}
    scores = {n: s.to(device[n]) for n, s in prepared.scores().items()}
    return ScoreResult(scores, solve=LayerSolver(prepared))
