"""``obs``: whole-network Optimal Brain Surgeon as a joint criterion (chooses and compensates).

Hassibi & Stork 1993 with the exact Gauss-Newton matrix ``H`` of the training loss over every weight and
bias of the network's Linear layers, in float64 (:mod:`sciprune.obs_network`, ``docs/obs_network.md``):
the weight with the smallest ``w_q^2 / (2 [H^-1]_qq)`` goes and every remaining parameter moves by
``-(w_q / [H^-1]_qq) H^-1 e_q``; ``H^-1`` is downdated, never re-inverted (``block`` weights at once by
the joint step). ``compute`` forms and inverts ``H`` once per plan; the solver prunes a copy of the
inverse to each ratio. Its scores (``sciprune.scores``) are the first saliencies, before any removal.

Not part of a study's ``methods = ["all"]``: ``H`` takes ``8 D^2`` bytes for ``D`` parameters, so
networks above ``max_params`` (default 10,000) are refused at case load, pointing to ``obs-layer``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..obs_layer import DEFAULT_DAMP
from ._registry import ScoreResult, Solution, register

__all__ = ["OPTIONS", "NetworkSolver"]

OPTIONS = {
    "damp": f"relative dampening of the Gauss-Newton matrix H (+ damp * mean(diag H) on the diagonal); default "
            f"{DEFAULT_DAMP:g} (Hassibi & Stork's H is undamped; cross-entropy always needs damp > 0)",
    "block": "int >= 1, default 1: weights removed jointly per step (1: Hassibi & Stork's one at a time)",
    "examples": "int >= 1 or None (default: all rows): rows H is averaged over, drawn with the seed",
    "max_params": "int >= 1, default 10000: the largest network (Linear weights and biases) accepted",
}


class NetworkSolver:
    """The solver of an ``obs`` plan: ``solve(ratio, scope)`` -> :class:`Solution` from a copy of the
    prepared inverse (:class:`sciprune.obs_network.NetworkOBS`), so that every ratio starts from it."""

    def __init__(self, prepared, block: int) -> None:
        self.prepared, self.block = prepared, block

    def __call__(self, ratio: float, scope: str) -> Solution:
        result = self.prepared.solve(ratio, scope, block=self.block)
        return Solution(result.masks, result.updates)


def check_network(model: nn.Module, options: dict) -> None:
    """The network's Linear parameters within ``max_params`` and memory (:mod:`sciprune.obs_network`)."""
    from ..checks import check_int
    from ..obs_network import MAX_PARAMS, check_size, network_layout

    check_size(network_layout(model).size, check_int(options.get("max_params", MAX_PARAMS), "max_params", lo=1))


@register("obs", summary="whole-network Optimal Brain Surgeon (Hassibi & Stork 1993) with the exact Gauss-Newton "
                         "matrix: chooses and compensates jointly, moving every remaining parameter; networks up to "
                         "max_params",
          needs_data=True, options=OPTIONS, joint=True, in_all=False, check_network=check_network)
def obs(model, batches, names, generator, *, damp=DEFAULT_DAMP, block=1, examples=None, max_params=None
        ) -> ScoreResult:
    from ..checks import check_int
    from ..obs_network import MAX_PARAMS, prepare_network_obs

    block = check_int(block, "block", lo=1)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
    prepared = prepare_network_obs(model, batches, damp=damp, examples=examples,
                                   max_params=MAX_PARAMS if max_params is None else max_params, seed=seed,
                                   names=list(names))
    device = {n: p.device for n, p in model.named_parameters()}
    scores = {n: s.to(device=device[n], dtype=torch.float64) for n, s in prepared.scores().items()}
    return ScoreResult(scores, solve=NetworkSolver(prepared, block))
