"""The members' data and losses in the ensemble engine: per-member arguments, rows stacked once (one
shared tensor when every member passes the same object), per-member losses, and
:func:`evaluate_ensemble`, the mean loss of each member in one batched pass per chunk (equal, member by
member, to :func:`sciprune.training.evaluate_loss`). :mod:`._fit` trains on the same pieces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses as _losses
from ..batches import as_tensor
from ..data._types import TaskData
from ..errors import SciPruneError
from ._stack import check_same_architecture, ensemble_forward, stack_models

__all__ = ["evaluate_ensemble"]


def _per_member(obj, M: int, what: str, shared_types: tuple) -> list:
    """One entry per member: a list must have M entries; a single shared object is repeated."""
    if isinstance(obj, list):
        if len(obj) != M:
            raise SciPruneError(
                f"{what} must be one shared value or a list with one entry per member; got {len(obj)} "
                f"entries for {M} members"
            )
        return obj
    if obj is None or isinstance(obj, shared_types):
        return [obj] * M
    raise SciPruneError(f"{what} must be a {' or '.join(t.__name__ for t in shared_types)} or a list of them, "
                        f"got {type(obj).__name__}")


def _stack_rows(objs: list, device, dtype, name: str) -> tuple[torch.Tensor, bool]:
    """Per-member arrays -> (tensor, shared): one (N, ...) tensor if all members pass the same object,
    else an (M, N, ...) stack. Conversion (and the finiteness check) runs once per distinct object."""
    cache: dict[int, torch.Tensor] = {}
    ts = []
    for o in objs:
        if id(o) not in cache:
            cache[id(o)] = as_tensor(o, device=device, dtype=dtype, name=name)
        ts.append(cache[id(o)])
    if len(cache) == 1:
        return ts[0], True
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape or t.dtype != ts[0].dtype:
            raise SciPruneError(
                f"{name} of member {i} has shape {tuple(t.shape)} ({t.dtype}), member 0 {tuple(ts[0].shape)} "
                f"({ts[0].dtype}); members of one ensemble need data of one shape; use sciprune.ensemble.fit_many"
            )
    return torch.stack(ts), False


def _take(T: torch.Tensor, shared: bool, idx: torch.Tensor) -> torch.Tensor:
    """Rows ``idx[m]`` of member m's data: (M, b, ...) from idx (M, b)."""
    if shared:
        return T[idx]
    return T[torch.arange(idx.shape[0], device=idx.device)[:, None], idx]


def _whole(T: torch.Tensor, shared: bool, M: int) -> torch.Tensor:
    return T.expand(M, *T.shape) if shared else T


def _member_losses(loss: str, pred: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """(M,) per-member loss: mean (or sum) over the member's batch, as ``F.mse_loss``/``F.cross_entropy``."""
    M = pred.shape[0]
    if loss == "mse":
        if pred.shape != y.shape:
            raise SciPruneError(f"mse needs targets shaped like the outputs (N, out); got outputs "
                                f"{tuple(pred.shape[1:])} and targets {tuple(y.shape[1:])} per member")
        per = (pred - y).square().reshape(M, -1)
    else:
        per = F.cross_entropy(pred.flatten(0, 1), y.flatten(0, 1), reduction="none").view(M, -1)
    return per.mean(1) if reduction == "mean" else per.sum(1)


@torch.no_grad()
def _eval(fwd, params, X, xs, Y, ys, loss: str, M: int, chunk: int) -> torch.Tensor:
    """(M,) float64 mean loss per member, summed in chunks as :func:`sciprune.training.evaluate_loss`."""
    n = X.shape[0] if xs else X.shape[1]
    total = torch.zeros(M, dtype=torch.float64, device=X.device)
    for s in range(0, n, chunk):
        xb = _whole(X[s : s + chunk] if xs else X[:, s : s + chunk], xs, M)
        yb = _whole(Y[s : s + chunk] if ys else Y[:, s : s + chunk], ys, M)
        total += _member_losses(loss, fwd(params, xb), yb, "sum").to(torch.float64)
    yshape = Y.shape if ys else Y.shape[1:]
    per = n * (yshape[1] if loss == "mse" and len(yshape) > 1 else 1)
    return total / per


def _eval_chunk(M: int) -> int:
    # fit evaluates 65536 rows at a time; M members at once keep the activation memory of that.
    return max(1024, 65536 // M)


@torch.no_grad()
def evaluate_ensemble(models: Sequence[nn.Module], data, loss: str | None = None, *, forward: str = "auto",
                      batch_size: int | None = None) -> list[float]:
    """Mean ``loss`` of each member on its data: ``[L_0, ..., L_{M-1}]``, one batched pass per chunk.

    ``data``: one ``(X, Y)`` shared, or a list with one ``(X, Y)`` per member (same N). Member m's
    value equals :func:`sciprune.training.evaluate_loss` of ``models[m]`` on its data.
    """
    models = list(models)
    check_same_architecture(models)
    M = len(models)
    if isinstance(data, TaskData) or (isinstance(data, list) and any(isinstance(d, TaskData) for d in data)):
        raise SciPruneError("evaluate_ensemble needs (X, Y) tuples, got a TaskData; pass (task.X_test, task.Y_test)")
    datas = _per_member(data, M, "data", (tuple,))
    p0 = next(models[0].parameters())
    X, xs = _stack_rows([d[0] for d in datas], p0.device, p0.dtype, "X")
    Y, ys = _stack_rows([d[1] for d in datas], p0.device, p0.dtype, "Y")
    loss = _losses.resolve(loss, Y)
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        params = stack_models(models)
        out = _eval(ensemble_forward(models[0], forward), params, X, xs, Y, ys, loss, M,
                    batch_size or _eval_chunk(M))
    finally:
        for m, was in zip(models, modes):
            m.train(was)
    return out.tolist()
