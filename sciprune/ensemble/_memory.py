"""How many ensemble members fit in memory at once."""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import SciPruneError

__all__ = ["member_bytes", "members_per_batch"]

_STATE_COPIES = {"adam": 2, "adamw": 2, "sgd": 1}  # optimiser state tensors per parameter


def _widths(model: nn.Module) -> tuple[int, int, list[int]]:
    """(in, out, hidden widths) of a Linear chain; for other models, rows of the 2-D parameters."""
    lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if lins:
        return lins[0].in_features, lins[-1].out_features, [lin.out_features for lin in lins[:-1]]
    mats = [p for p in model.parameters() if p.ndim >= 2]
    if not mats:
        raise SciPruneError("cannot estimate activation sizes of a model without matrix parameters")
    return int(mats[0].shape[-1]), int(mats[-1].shape[0]), [int(p.shape[0]) for p in mats[:-1]]


def member_bytes(
    model: nn.Module,
    n_points: int,
    batch_size: int | None,
    *,
    dtype: torch.dtype | None = None,
    optimizer: str = "adam",
    shared_x: bool = True,
) -> int:
    """Estimated bytes one member adds to :func:`sciprune.ensemble.fit_ensemble`.

    P parameters x (value + gradient + mask + optimiser state) + one mini-batch of activations,
    B x (in + 4 sum(hidden) + 3 out) (inputs; pre- and post-activations and their gradients; outputs,
    targets, residual) + the member's own targets (and inputs unless shared) and its permutation.
    """
    if int(n_points) < 1:
        raise SciPruneError(f"n_points must be a positive integer, got {n_points!r}")
    if batch_size is not None and int(batch_size) < 1:
        raise SciPruneError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if optimizer not in _STATE_COPIES:
        raise SciPruneError(f"optimizer must be one of {sorted(_STATE_COPIES)}, got {optimizer!r}; "
                            "L-BFGS is trained per model by sciprune.fit")
    p0 = next(model.parameters())
    item = torch.empty((), dtype=dtype or p0.dtype).element_size()
    P = sum(p.numel() for p in model.parameters())
    n_in, n_out, hidden = _widths(model)
    B = int(n_points) if batch_size is None else min(int(batch_size), int(n_points))
    per = P * (3 + _STATE_COPIES[optimizer]) * item
    per += B * (n_in + 4 * sum(hidden) + 3 * n_out) * item
    per += int(n_points) * ((0 if shared_x else n_in) + n_out) * item + int(n_points) * 4  # int32 order
    return int(per)


def _available_bytes(device: torch.device, fraction: float | None) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * (0.8 if fraction is None else fraction))
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 4 GiB
        avail = 4 << 30
    return int(avail * (0.25 if fraction is None else fraction))


def members_per_batch(
    model: nn.Module,
    n_points: int,
    batch_size: int | None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    *,
    optimizer: str = "adam",
    shared_x: bool = True,
    fraction: float | None = None,
    max_members: int = 4096,
) -> int:
    """Members of ``model``'s architecture to train at once: budget // :func:`member_bytes`, at least 1.

    Budget: ``fraction`` (default 0.8) of the free memory from ``torch.cuda.mem_get_info`` on CUDA;
    ``fraction`` (default 0.25, the machine is often shared) of the available RAM
    (``os.sysconf``: SC_AVPHYS_PAGES x SC_PAGE_SIZE) on CPU. Capped at ``max_members``.
    """
    if fraction is not None and not (0 < fraction <= 1):
        raise SciPruneError(f"fraction must be in (0, 1], got {fraction!r}")
    p0 = next(model.parameters(), None)
    if p0 is None:
        raise SciPruneError("model has no parameters")
    device = torch.device(device) if device is not None else p0.device
    per = member_bytes(model, n_points, batch_size, dtype=dtype, optimizer=optimizer, shared_x=shared_x)
    return int(max(1, min(int(max_members), _available_bytes(device, fraction) // per)))
