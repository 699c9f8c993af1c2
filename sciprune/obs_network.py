"""Whole-network Optimal Brain Surgeon (``obs``) with the exact Gauss-Newton matrix, in float64.

Hassibi & Stork, "Second order derivatives for network pruning: Optimal Brain Surgeon" (NIPS 1992,
publ. 1993), eq. 4-5, with the curvature ``H`` the Gauss-Newton matrix of the training loss over
every weight and bias of the network's Linear layers (:func:`sciprune.obs_ggn.network_ggn`). In the
quadratic model ``dL = 1/2 dtheta^T H dtheta`` of the loss around ``theta``:

1. ``P = (H + damp * mean(diag H) * I)^-1`` once (one Cholesky); already-pruned weights are left out
   of ``H`` first (the inverse of a principal submatrix is the Schur complement of the inverse, so
   this is their block elimination from ``P``), stay zero and are never updated.
2. Removal of a weight ``q`` of the pool costs ``L_q = w_q^2 / (2 P_qq)`` (its saliency); the
   smallest goes, and every remaining parameter moves by ``dtheta = -(w_q / P_qq) P[:, q]``, the
   minimiser of the quadratic model with ``theta_q = 0``. ``P <- P - P[:, q] P[q, :] / P_qq`` is then
   the inverse of ``H`` without ``q`` (never re-inverted).
3. With ``block = k > 1`` the ``k`` smallest saliencies ``Q`` go together by the joint OBS step
   ``dtheta = -P[:, Q] P_QQ^-1 w_Q``, ``dL = 1/2 w_Q^T P_QQ^-1 w_Q``, ``P <- P - P[:, Q] P_QQ^-1 P[Q, :]``.

Each step starts at the constrained minimum of the quadratic model left by the previous one, so the
predicted increases add up to ``1/2 dtheta^T H dtheta`` of the whole change (``H`` damped when
``damp > 0``). The number removed is ``floor(ratio * n + 0.5)`` of the pool's ``n`` weights minus
those pruned already (:func:`sciprune.selection.n_to_prune`); ``scope="layer"`` gives every layer its
own count, with ``H`` still the whole network's. Applied by :func:`sciprune.obs_layer.apply_obs`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from .batches import as_batches
from .checks import bytes_text, check_choice, check_int, check_number, check_positive_int, check_seed, memory_bytes
from .criteria._loss_models import select_examples
from .errors import SciPruneError
from .masks import get_masks
from .models import device_and_dtype
from .obs_ggn import Layout, ggn_inverse, network_ggn, network_layout
from .obs_layer import OBSResult
from .obs_surgery import Inverse, compact_in_place, surgery
from .selection import SCOPES, check_ratio, n_to_prune

__all__ = ["MAX_PARAMS", "check_size", "OBSStats", "OBSNetworkResult", "NetworkOBS", "prepare_network_obs", "obs_network_plan"]

#: Default largest number of Linear parameters (weights and biases): H then takes 763 MiB of float64.
MAX_PARAMS = 10_000
#: Why ``H`` is singular, where the loss says more than the default reason.
_WHY = {"cross_entropy": {"why": "always with cross-entropy: the softmax ignores a common shift of the logits, so the "
                                 "output layer has flat directions"}}


@dataclass(frozen=True)
class OBSStats:
    """Cost and trace of one :func:`obs_network_plan`.

    ``params``: D, the Linear parameters; ``coordinates``: those in ``H`` (D minus the weights pruned
    already); ``rows``: samples the Gauss-Newton matrix was averaged over; ``loss``: its loss;
    ``hessian_bytes``: the float64 ``H`` (the peak of the method: the Jacobian rows of a chunk, 32 MiB
    at most, come on top; ``P`` reuses ``H``'s memory); ``seconds_*``: forming ``H``, inverting it, the
    removals; ``step_losses``: the predicted loss increase of each removal step (one per block).
    """

    params: int
    coordinates: int
    rows: int
    loss: str
    hessian_bytes: int
    seconds_hessian: float
    seconds_inverse: float
    seconds_removals: float
    step_losses: torch.Tensor = field(repr=False)

    @property
    def predicted_increase(self) -> float:
        """The predicted increase of the training loss, ``1/2 dtheta^T H dtheta`` of the whole change."""
        return float(self.step_losses.sum())


@dataclass(frozen=True)
class OBSNetworkResult(OBSResult):
    """An :class:`~sciprune.obs_layer.OBSResult` of whole-network OBS (applied by ``apply_obs``).

    ``masks``: ``{weight name: keep-mask}`` of every Linear weight; ``updates``: ``{parameter name:
    delta}`` (float64, CPU) of every Linear weight and bias (``-w`` at the removed weights);
    ``losses``: ``{weight name: tensor shaped like the weight}``, the share of the predicted loss
    increase of each removed weight (0 elsewhere): ``1/2 w_q [P_QQ^-1 w_Q]_q`` for a weight of block
    ``Q``, which is the whole step's increase for ``block = 1``; they sum to
    ``stats.predicted_increase``. ``block``: the block size; ``stats``: :class:`OBSStats`.
    """

    method: str = "obs"
    block: int = 1
    stats: OBSStats | None = field(default=None, repr=False)


def check_size(D: int, max_params: int) -> None:
    need = 8 * D * D
    avail = memory_bytes()
    if D > max_params:
        raise SciPruneError(
            f"obs (whole-network OBS) forms the dense Gauss-Newton matrix of all {D} Linear parameters, above "
            f"max_params = {max_params} (H would need {bytes_text(need)} of float64); use obs-layer (layer-wise OBS, "
            f"sciprune.obs_layer.obs_layer_plan) or raise max_params")
    if avail and need > avail // 2:
        raise SciPruneError(f"obs needs {bytes_text(need)} for the Gauss-Newton matrix of {D} parameters, more than "
                            f"half of this machine's {bytes_text(avail)}; use obs-layer (layer-wise OBS) instead")


def _pools(layout: Layout, scope: str, before: dict[str, torch.Tensor], ratio: float, weights: list[str]
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pool (D,) long, quota (pools,) long)``: each coordinate's pool (-1 for a bias or a weight not in
    ``weights``, the pruned pool; 0 for every weight of it with ``scope="global"``, its layer's index with
    ``"layer"``) and each pool's removals to do."""
    ids = {n: (0 if scope == "global" else i) for i, n in enumerate(weights)}
    pool = layout.flatten({n: torch.full(layout.shapes[n], ids.get(n, -1)) for n in layout.names}).long()
    quota = torch.zeros(max(ids.values()) + 1, dtype=torch.long)
    for p in range(quota.numel()):
        names = [n for n in weights if ids[n] == p]
        total = sum(before[n].numel() for n in names)
        dead = sum(int((~before[n]).sum()) for n in names)
        quota[p] = max(n_to_prune(ratio, total) - dead, 0)
    return pool, quota


def _check_options(block, damp, examples, max_params, batch_size, seed) -> tuple:
    return (check_int(block, "block", lo=1),
            check_number(damp, "damp", meaning=" (added as damp * mean(diag H) to the diagonal of the Gauss-Newton matrix H)"),
            check_int(examples, "examples", lo=1, none_ok=True), check_int(max_params, "max_params", lo=1),
            check_positive_int(batch_size, "batch_size", none_ok=True), check_seed(seed))


class NetworkOBS:
    """The ratio-free part of whole-network OBS, made by :func:`prepare_network_obs`: ``P = H^-1`` on
    the live coordinates ``act`` (float64, on the model's device), ``zero`` (``diag H = 0`` there), the
    parameters ``theta0`` and masks ``before``. :meth:`solve` prunes to a ratio; :meth:`scores` gives
    the first saliencies."""

    def __init__(self, layout: Layout, before: dict[str, torch.Tensor], theta0: torch.Tensor, P: torch.Tensor,
                 zero: torch.Tensor, act: torch.Tensor, damp: float, rows: int, loss: str, seconds: tuple[float, float],
                 names: list[str] | None = None):
        self.layout, self.before, self.theta0, self.P, self.zero, self.act = layout, before, theta0, P, zero, act
        self.damp, self.rows, self.loss, self.seconds = damp, rows, loss, seconds
        self.weights = [n for n in layout.names if layout.layer[n] == n and (names is None or n in names)]

    def scores(self) -> dict[str, torch.Tensor]:
        """``{weight name: w_q^2 / (2 P_qq)}`` (float64, CPU): each live weight's OBS saliency before any
        removal (0 where ``diag H = 0`` and at the weights pruned already)."""
        if self.P is None:
            raise SciPruneError("this prepared OBS was consumed by solve(..., consume=True); prepare it again")
        w = self.theta0[self.act]
        sal = torch.where(self.zero, 0.0, w * w / (2 * self.P.diagonal()))
        flat = torch.zeros_like(self.theta0).index_copy_(0, self.act, sal).cpu()
        return {n: v.clone() for n, v in self.layout.unflatten(flat).items() if n in self.weights}

    def solve(self, ratio: float, scope: str = "global", *, block: int = 1, consume: bool = False) -> OBSNetworkResult:
        """Greedy OBS removals to ``ratio`` (see the module docstring). ``P`` is downdated in place with
        ``consume=True`` (no second D x D matrix; the object cannot solve again), on a copy otherwise."""
        ratio = check_ratio(ratio)
        check_choice(scope, SCOPES, "scope")
        block = check_int(block, "block", lo=1)
        if self.P is None:
            raise SciPruneError("this prepared OBS was consumed by solve(..., consume=True); prepare it again")
        P = self.P if consume else self.P.clone()
        if consume:
            self.P = None
        layout, device = self.layout, self.theta0.device
        pool, quota = _pools(layout, scope, self.before, ratio, self.weights)
        inv = Inverse(P, self.zero, self.act, pool.to(device)[self.act])
        del P  # inv holds the only reference: its compactions reuse the memory
        t0 = time.perf_counter()
        theta = self.theta0.clone()
        removed, shares, steps = surgery(inv, theta, quota.to(device), block)
        del inv
        seconds = time.perf_counter() - t0
        removed, shares = layout.unflatten(removed.cpu()), layout.unflatten(shares.cpu())
        updates = {n: d.clone() for n, d in layout.unflatten((theta - self.theta0).cpu()).items()}
        masks = {n: self.before[n] & ~removed[n] for n in self.weights}
        stats = OBSStats(layout.size, int(self.act.numel()), self.rows, self.loss, 8 * layout.size ** 2, *self.seconds,
                         seconds, torch.tensor(steps, dtype=torch.float64))
        return OBSNetworkResult(masks, updates, {n: shares[n].clone() for n in self.weights}, ratio, scope, self.damp,
                                block=block, stats=stats)


def prepare_network_obs(model: nn.Module, data, *, damp: float = 0.0, examples: int | None = None,
                        max_params: int = MAX_PARAMS, batch_size: int | None = None, seed: int = 0,
                        names: list[str] | None = None) -> NetworkOBS:
    """The Gauss-Newton matrix of ``model``'s training loss on ``data`` and its inverse, once for any
    number of :meth:`NetworkOBS.solve` calls (arguments as :func:`obs_network_plan`; ``names``: the
    weights that may be removed, default all; the others and the biases only move)."""
    if not isinstance(model, nn.Module):
        raise SciPruneError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _, damp, examples, max_params, batch_size, seed = _check_options(1, damp, examples, max_params, batch_size, seed)
    layout = network_layout(model)
    check_size(layout.size, max_params)
    if data is None:
        raise SciPruneError("obs needs data: pass (X, Y) (the training set) or an iterable of batches")
    device = device_and_dtype(model)[0]
    batches = as_batches(data, device=device, dtype=torch.float64, batch_size=batch_size, model=model)
    n_rows = sum(int(X.shape[0]) for X, _ in batches)
    if examples is not None and examples > n_rows:
        raise SciPruneError(f"examples must be at most the {n_rows} rows of the data, got {examples}")
    rows = select_examples(batches, examples, torch.Generator().manual_seed(seed))
    weights = [n for n in layout.names if layout.layer[n] == n]
    before = {n: m.cpu() for n, m in get_masks(model, names=weights).items()}
    live = layout.flatten({n: before.get(n, torch.ones(layout.shapes[n], dtype=torch.bool)) for n in layout.names}) > 0
    theta0 = layout.flatten(dict(model.named_parameters())).to(device)
    t0 = time.perf_counter()
    H, N, loss = network_ggn(model, rows, layout)
    scale = float(H.diagonal().mean())
    t1 = time.perf_counter()
    act = torch.nonzero(live).flatten().to(device)
    if act.numel() < layout.size:
        H = compact_in_place(H, act)  # the pruned weights leave the problem (in H's own memory)
    what = f"the Gauss-Newton matrix H of the {loss} loss over {act.numel()} parameters from {N} rows"
    P, zero = ggn_inverse(H, damp, what, scale=scale, **_WHY.get(loss, {}))
    del H  # P lives in H's memory
    return NetworkOBS(layout, before, theta0, P, zero, act, damp, N, loss, (t1 - t0, time.perf_counter() - t1),
                      names=names)


def obs_network_plan(model: nn.Module, data, ratio: float, *, scope: str = "global", block: int = 1,
                     damp: float = 0.0, examples: int | None = None, max_params: int = MAX_PARAMS,
                     batch_size: int | None = None, seed: int = 0) -> OBSNetworkResult:
    """Whole-network OBS of ``model`` on ``data`` to a weight ``ratio`` (see the module docstring):
    :func:`prepare_network_obs` then :meth:`NetworkOBS.solve` in ``P``'s own memory.

    Args:
        model: an ``nn.Sequential`` of Linear layers and elementwise activations (unchanged here).
        data: ``(X, Y)``, a TaskData (its training split) or an iterable of ``(X, Y)`` batches: the
            training data; the targets choose the loss (floating: MSE, integer labels: cross-entropy).
        ratio: fraction of the Linear weights removed, in [0, 1), already-pruned ones included.
        scope: ``"global"`` (one pool of all weights) or ``"layer"`` (``ratio`` of each layer).
        block: weights removed jointly per step (1: the classic one at a time).
        damp: relative dampening ``damp * mean(diag H)`` of ``H``; needed when ``H`` is singular
            (fewer samples times outputs than parameters; always with cross-entropy).
        examples: rows ``H`` is averaged over, drawn without replacement with ``seed`` as ``obd``
            draws them (None: all rows; more than the data is an error).
        max_params: the largest network (weights and biases of its Linear layers) accepted.
        batch_size: rows per batch when reading the data (default: all at once).
        seed: the seed of the ``examples`` draw.
    """
    ratio = check_ratio(ratio)
    check_choice(scope, SCOPES, "scope")
    _check_options(block, damp, examples, max_params, batch_size, seed)  # every option before any work
    prepared = prepare_network_obs(model, data, damp=damp, examples=examples, max_params=max_params,
                                   batch_size=batch_size, seed=seed)
    return prepared.solve(ratio, scope, block=block, consume=True)
