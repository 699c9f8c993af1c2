"""The one check of a device name, for every command and library entry point."""

from __future__ import annotations

import torch

from .errors import SciPruneError

__all__ = ["resolve_device"]


def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device of ``name``: ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; the one check of a device
    for every command and library entry. A clear error for any other string, or a device this machine lacks."""
    text = str(name) if isinstance(name, torch.device) else name
    kind, _, index = text.partition(":") if isinstance(text, str) else ("", "", "")
    ok = (kind in ("cpu", "mps") and not _) or (kind == "cuda" and (not _ or (index.isascii() and index.isdigit() and len(index) <= 4)))
    if not ok:
        raise SciPruneError(f"device must be 'cpu', 'cuda', 'cuda:N' (N = 0, 1, ...) or 'mps', got {name!r}")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise SciPruneError(f"device {text!r} requested but no CUDA device is available; use device 'cpu'")
        count = torch.cuda.device_count()
        if index and int(index) >= count:
            raise SciPruneError(f"device {text!r} requested but this machine has {count} CUDA device(s): "
                                f"use cuda:0 to cuda:{count - 1}")
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise SciPruneError(f"device {text!r} requested but no Apple MPS device is available; use device 'cpu'")
    return torch.device(text)
