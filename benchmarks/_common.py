"""What every benchmark shares: device set-up and the header line, and timing with CUDA synchronised.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this module is imported as ``_common``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import sciprune

__all__ = ["setup", "sync", "timed", "interleaved_ms_per_step", "print_ratio_table", "scoring_case"]


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock times cover it (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Wall time of ``fn()`` in seconds, synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def setup(args: argparse.Namespace) -> tuple[torch.device, torch.dtype]:
    """Apply ``args.threads``; print the device, torch, threads, dtype and sciprune versions."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype_name = getattr(args, "dtype", "float32")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"device: {device} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"dtype {dtype_name}; sciprune {sciprune.__version__}")
    return device, getattr(torch, dtype_name)


def interleaved_ms_per_step(run, variants, repeats: int, steps: int, device: torch.device) -> dict[str, list[float]]:
    """ms per optimiser step of ``run(name)`` (``steps`` steps) for each of ``variants``, ``repeats`` times,
    the order rotated by one each repeat so that no variant always runs first."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        k = r % len(variants)
        for name in variants[k:] + variants[:k]:
            times[name].append(timed(lambda: run(name), device) / steps * 1e3)
    return times


def print_ratio_table(times: dict[str, list[float]], base: str, width: int = 12) -> None:
    """Median, min and max ms/step per variant, and the median of its per-repeat ratios to ``base``."""
    print(f"{'version':<{width}} {'ms/step':>9} {'min':>8} {'max':>8} {'ratio':>7}")
    for name, t in times.items():
        ratio = statistics.median(a / b for a, b in zip(t, times[base]))
        print(f"{name:<{width}} {statistics.median(t):9.4f} {min(t):8.4f} {max(t):8.4f} {ratio:7.3f}")


def scoring_case(which: str, g: torch.Generator, device: torch.device, dtype: torch.dtype):
    """``(title, model, X, Y, loss)`` of the scoring benchmarks' cases, drawn from ``g``: ``"a"`` the
    2-40x6-1 tanh surrogate on 103,424 random points (1024 x 101 grid size, MSE), ``"b"`` LeNet-300-100 on
    60,000 random 784-pixel samples with 10 classes (cross-entropy)."""
    if which == "a":
        model = sciprune.MLP(2, [40] * 6, 1, "tanh", seed=0).to(device, dtype)
        X = torch.rand(1024 * 101, 2, generator=g).to(device, dtype)
        Y = torch.rand(1024 * 101, 1, generator=g).to(device, dtype)
        return "(a) 2-40x6-1 tanh surrogate (MSE)", model, X, Y, "mse"
    model = sciprune.lenet_300_100(seed=0).to(device, dtype)
    X = torch.rand(60000, 784, generator=g).to(device, dtype)
    Y = torch.randint(0, 10, (60000,), generator=g).to(device)
    return "(b) LeNet-300-100 ReLU (cross-entropy)", model, X, Y, "ce"
