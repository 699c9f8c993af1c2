"""Loss modelling (Laurent, Ballas et al. 2020, arXiv 2006.12279): what ``obd``, ``lm`` and ``qm`` share.

The removal of weight ``theta_i`` (setting it to 0, a step ``-theta_i``) changes the training loss
``L``, to second order in a diagonal model, by ``-g_i theta_i + 1/2 d_i theta_i^2``; the score is

    r_i = | -g_i theta_i + 1/2 d_i theta_i^2 | + 1/2 lambda theta_i^2

(``compute_ranks`` in Thrandis/loss-models-pruning ``pruning.py``): OBD g = 0, d = GGN diagonal
(LeCun, Denker & Solla 1990); LM g = mean gradient, d = 0; QM g = mean gradient, d = GGN diagonal;
``lambda`` (option ``locality``) is the locality penalty, outside the absolute value.

``g`` is the gradient of the training loss (sciprune's: MSE mean over samples and outputs, or
cross-entropy mean over samples, :mod:`sciprune.losses`) and ``d`` the exact diagonal of its
Gauss-Newton matrix ``G = (1/N) sum_n J_n^T H_n J_n`` (:func:`sciprune.curvature.ggn_diagonal`):
``H_n = diag(p) - p p^T`` for cross-entropy (``G`` is then the true Fisher), ``H_n = (2/C) I`` for
MSE over C outputs, i.e. ``d_i = (2 / (N C)) sum_{n,c} (dy_nc / d theta_i)^2``. Both are taken over
the same rows: all of them, or ``examples`` rows drawn without replacement (:func:`select_examples`),
and from one forward pass and one backward walk of C + 1 cotangents (the C columns of the output
Hessian's square root, and ``dl/dy``; :func:`sciprune.curvature._ggn_diag.walk_loss`).
"""

from __future__ import annotations


import torch

from .. import losses
from ..batches import Batches
from ..checks import check_number, check_positive_int
from ..curvature._ggn_diag import loss_terms
from ..errors import SciPruneError
from ._registry import ScoreResult

__all__ = ["EXAMPLES_OPTION", "LOCALITY_OPTION", "check_locality", "drawn_rows", "loss_model_scores", "loss_model_terms",
           "mean_gradient", "select_examples", "summed_gradient", "weight_ggn_diagonal", "weight_scores"]

#: The ``examples`` option as ``sciprune methods`` lists it.
EXAMPLES_OPTION = {"examples": "int >= 1 or None (default: all rows); that many training rows drawn without "
                               "replacement with the seed; more than the data means all rows"}
#: The ``locality`` option (Laurent et al.'s lambda).
LOCALITY_OPTION = {"locality": "float >= 0, default 0: lambda of the penalty 1/2 lambda W^2 added outside |.|"}


def check_locality(locality) -> float:
    """``locality`` as a float if it is a finite real >= 0, else a one-line :class:`SciPruneError`."""
    return check_number(locality, "locality", meaning=" (the lambda of 1/2 lambda W^2)")


def _row_count(batches: Batches) -> int:
    res = batches.resident
    if res is not None:
        return int(res[0].shape[0])
    return sum(int(X.shape[0]) for X, _ in batches)  # one extra pass over an iterable's batches


def drawn_rows(N: int, examples: int, generator: torch.Generator) -> torch.Tensor:
    """The ``examples`` rows (< N) the draw keeps, as a boolean mask over the N rows: the first
    ``examples`` entries of ``torch.randperm(N, generator=generator)``."""
    keep = torch.zeros(N, dtype=torch.bool)
    keep[torch.randperm(N, generator=generator)[:examples]] = True
    return keep


def select_examples(batches: Batches, examples, generator: torch.Generator) -> Batches | list:
    """The rows the curvature and gradient are taken over.

    ``examples`` None, or at least the number N of rows: ``batches`` itself (all rows). Otherwise the
    rows whose global indices (their order through the batches) are the first ``examples`` entries
    of ``torch.randperm(N, generator=generator)``, kept in their batches (a batch losing every row is
    dropped): the same rows for a seed whatever the batch size or the form of the data.
    """
    examples = check_positive_int(examples, "examples", none_ok=True)
    if examples is None:
        return batches
    N = _row_count(batches)
    if examples >= N:
        return batches
    keep = drawn_rows(N, examples, generator)
    out, start = [], 0
    for X, Y in batches:
        k = keep[start:start + X.shape[0]].to(X.device)
        start += X.shape[0]
        if bool(k.any()):
            out.append((X[k], Y[k]))
    return out


def _loss_name(batches) -> str:
    for _, Y in batches:
        return losses.loss_for_targets(Y)
    raise SciPruneError("the data yielded no batches")


def summed_gradient(model: torch.nn.Module, batches, names: list[str]) -> tuple[dict[str, torch.Tensor], int]:
    """``(sum over batches of d(summed loss)/dtheta in float64, count)``: the training loss's gradient
    is the first divided by the second (the count :func:`sciprune.losses.count` divides the sum by)."""
    params = dict(model.named_parameters())
    weights = [params[n] for n in names]
    total = [torch.zeros_like(w, dtype=torch.float64) for w in weights]
    count = 0
    with torch.enable_grad():
        for X, Y in batches:
            y = model(X)
            loss = losses.loss_for_targets(Y)
            summed = losses.value(loss, y, losses.targets(loss, y, Y), "sum")
            for acc, g in zip(total, torch.autograd.grad(summed, weights, allow_unused=True)):
                if g is not None:
                    acc += g.to(torch.float64)
            count += losses.count(loss, y)
    return dict(zip(names, total)), count


def mean_gradient(model: torch.nn.Module, batches, names: list[str]) -> dict[str, torch.Tensor]:
    """``dL/dtheta`` (float64) of the training loss ``L`` over every row of ``batches``: the per-batch
    gradients of the summed loss added up, divided by the total count (independent of the batching)."""
    total, count = summed_gradient(model, batches, names)
    return {n: t / count for n, t in total.items()}


def loss_model_terms(model: torch.nn.Module, batches, names: list[str], *, grad: bool, diag: bool
                     ) -> tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
    """``(g, d)`` (float64, None where not asked for) over every row of ``batches``, from one walk of the
    chain: the mean gradient ``g`` (:func:`mean_gradient`'s) and the exact GGN diagonal ``d`` (0 at
    pruned entries), the loss chosen by the targets as in training."""
    d, g = loss_terms(model, batches, loss=_loss_name(batches), names=names, diagonal=diag, gradient=grad)
    return g, d


def weight_ggn_diagonal(model: torch.nn.Module, batches, names: list[str]) -> dict[str, torch.Tensor]:
    """The exact GGN diagonal of the training loss over ``batches`` for the weights ``names`` (float64;
    0 at pruned entries), the loss chosen by the targets as in training."""
    return loss_model_terms(model, batches, names, grad=False, diag=True)[1]


def loss_model_scores(model: torch.nn.Module, names: list[str], *, grad: dict[str, torch.Tensor] | None,
                      diag: dict[str, torch.Tensor] | None, locality: float = 0.0) -> ScoreResult:
    """``r = |-g W + 1/2 d W^2| + 1/2 lambda W^2`` per weight (float64); ``grad``/``diag`` None mean 0."""
    params = dict(model.named_parameters())
    return weight_scores({n: params[n].detach() for n in names}, grad=grad, diag=diag, locality=locality)


def weight_scores(weights: dict[str, torch.Tensor], *, grad: dict[str, torch.Tensor] | None,
                  diag: dict[str, torch.Tensor] | None, locality: float = 0.0) -> ScoreResult:
    """:func:`loss_model_scores` for given weights (any shape, e.g. (M, out, in) for a stack of members)."""
    out = {}
    for n, W in weights.items():
        W = W.to(torch.float64)
        r = torch.zeros_like(W)
        if grad is not None:
            r -= grad[n] * W
        if diag is not None:
            r += 0.5 * diag[n] * W * W
        r = r.abs()
        if locality:
            r += 0.5 * locality * W * W
        out[n] = r
    return ScoreResult(out)
