"""The batched path of ``obd``, ``lm`` and ``qm`` (:func:`register_batched`): M same-shaped members at once.

Member m's rows are those its single-model call takes: all of them, or the ``examples`` rows of
:func:`drawn_rows` with a generator seeded with its seed (:func:`select_examples`' rule). Over them, one
stacked forward pass (a ``baddbmm`` per layer) and one backward walk of C + 1 cotangents per chunk
(:func:`sciprune.curvature._ggn_diag.walk_loss` on a stacked :class:`sciprune.chain.Walker`: C columns
of the output Hessian's square root for the GGN diagonal ``d``, ``dl/dy`` for the mean gradient ``g``),
with every product a ``torch.bmm`` over the members; then the same score
``r = |-g W + 1/2 d W^2| + 1/2 lambda W^2`` (:func:`weight_scores`) on the stacked weights (M, out, in).
"""

from __future__ import annotations

import torch

from .. import losses
from ..chain import Walker
from ..checks import check_positive_int
from ..curvature._ggn_diag import walk_loss
from ._loss_models import drawn_rows, weight_scores
from ._registry import Resident, ScoreResult, Stacked

__all__ = ["batched_loss_model_scores", "member_rows", "stacked_loss_model_terms"]


def member_rows(data: Resident, seeds: list[int], examples) -> Resident:
    """The rows each member's score is taken over: ``data`` itself (``examples`` None or at least N), or
    member m's ``examples`` rows drawn with its seed, in their order, stacked (M, examples, ...) (kept
    shared when every member draws the same rows of shared data)."""
    examples = check_positive_int(examples, "examples", none_ok=True)
    if examples is None or examples >= data.N:
        return data
    idx = [torch.nonzero(drawn_rows(data.N, examples, torch.Generator().manual_seed(s))).squeeze(1) for s in seeds]
    same = all(torch.equal(i, idx[0]) for i in idx)

    def pick(T: torch.Tensor, shared: bool) -> tuple[torch.Tensor, bool]:
        if shared and same:
            return T[idx[0].to(T.device)], True
        return torch.stack([(T if shared else T[m])[i.to(T.device)] for m, i in enumerate(idx)]), False

    return Resident(*pick(data.X, data.x_shared), *pick(data.Y, data.y_shared), examples)


def stacked_loss_model_terms(stack: Stacked, examples, *, grad: bool, diag: bool
                             ) -> tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
    """``(g, d)`` of every member, ``{name: (M, out, in)}`` float64 (None where not asked for); ``d`` is
    not zeroed at pruned entries (their weights are zero, so is their score)."""
    from ..ensemble._batched_stats import _chunk_rows, _rows  # lazy: the ensemble package imports the criteria

    data, M = member_rows(stack.data, stack.seeds, examples), stack.M
    walker = Walker(stack.template, stack.params)
    at = {t: n for n, t in walker.linear_at.items() if n in stack.names}
    K = walker.weight(max(walker.layers.values())).shape[1]
    widths = [max(p.shape[1:]) for p in stack.params.values() if p.ndim == 3]
    rows = _chunk_rows(M, widths, K * diag + grad, stack.batch_size)
    chunks = ((_rows(data.X, data.x_shared, slice(s, s + rows), M), _rows(data.Y, data.y_shared, slice(s, s + rows), M))
              for s in range(0, data.N, rows))
    walk = walk_loss(walker, chunks, losses.loss_for_targets(data.Y), sorted(at), diag=diag, grad=grad)
    g = {at[t]: walk.grad_w[t] / walk.count for t in sorted(at)} if grad else None
    d = {at[t]: walk.diag_w[t] / walk.rows for t in sorted(at)} if diag else None
    return g, d


def batched_loss_model_scores(stack: Stacked, examples, *, grad: bool, diag: bool, locality: float = 0.0) -> ScoreResult:
    """The scores of every member, ``{name: (M, out, in)}`` float64 (``register_batched``'s contract)."""
    g, d = stacked_loss_model_terms(stack, examples, grad=grad, diag=diag)
    return weight_scores({n: stack.params[n] for n in stack.names}, grad=g, diag=d, locality=locality)
