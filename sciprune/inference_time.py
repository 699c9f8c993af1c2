"""Wall-clock time of a network's forward pass, per row, as a simulation code that calls it would see it.

:func:`forward_time_us` times a float32 copy of the network under ``torch.inference_mode`` on the
device it lives on: ``batch = 1`` calls it once per row (a code that asks for one point at a time) on up
to ``rows`` rows, ``batch = None`` once on all of ``X``. After one warm-up pass, each of ``repeats``
repeats times the whole loop (``time.perf_counter``, CUDA synchronised before and after); the result is
the median over repeats of the time divided by the number of rows, in microseconds. On the CPU it runs
with ``threads`` torch threads (default 1, restored afterwards): on a shared machine several threads
can make a small call a hundred times slower than one, which would measure the machine's load rather
than the network. It is a wall-clock measurement: it depends on the machine and its load, and is not
reproducible bit for bit.
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
from torch import nn

from .errors import SciPruneError

__all__ = ["forward_time_us"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_time_us(model: nn.Module, X: torch.Tensor, *, batch: int | None, repeats: int = 5,
                    rows: int = 64, threads: int | None = 1) -> float:
    """Median over ``repeats`` of the forward pass's time per row (microseconds) of ``model`` in float32
    on ``X`` (moved to the model's device): one row per call on the first ``rows`` rows (``batch=1``)
    or all of ``X`` in one call (``batch=None``); ``threads`` torch threads on the CPU (None: as set)."""
    if batch not in (1, None):
        raise SciPruneError(f"batch must be 1 or None (the whole input in one call), got {batch!r}")
    if repeats < 1 or rows < 1 or (threads is not None and threads < 1):
        raise SciPruneError(f"repeats, rows and threads must be >= 1, got {repeats}, {rows} and {threads}")
    if X.ndim != 2 or X.shape[0] == 0:
        raise SciPruneError(f"X must have shape (rows >= 1, features), got {tuple(X.shape)}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else X.device
    net = copy.deepcopy(model).to(dtype=torch.float32).eval()
    X = X.detach().to(device=device, dtype=torch.float32)
    calls = [X[i : i + 1].clone() for i in range(min(rows, X.shape[0]))] if batch == 1 else [X]
    n = sum(x.shape[0] for x in calls)
    before = torch.get_num_threads()
    change = threads is not None and device.type == "cpu" and threads != before
    if change:
        torch.set_num_threads(threads)
    try:
        return _median_time(net, calls, n, repeats, device)
    finally:
        if change:
            torch.set_num_threads(before)


def _median_time(net: nn.Module, calls: list[torch.Tensor], n: int, repeats: int, device: torch.device) -> float:
    times = []
    with torch.inference_mode():
        for x in calls:  # warm-up
            net(x)
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            for x in calls:
                net(x)
            _sync(device)
            times.append((time.perf_counter() - t0) / n * 1e6)
    return float(statistics.median(times))
