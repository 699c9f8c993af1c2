"""What every benchmark shares: device set-up and the header line, and timing with CUDA synchronised.

Benchmarks run as scripts (``python benchmarks/bench_x.py``), so this module is imported as ``_common``.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import sciprune

__all__ = ["setup", "sync", "timed"]


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
