"""Hutchinson estimators of the trace and the diagonal of the Hessian or GGN.

For probes ``z`` with ``E[z z^T] = I`` (Rademacher: entries +-1 with probability 1/2),
``tr M = E[z^T M z]`` and ``diag M = E[z * (M z)]`` (Hutchinson 1990; Bekas, Kokiopoulou & Saad 2007
for the diagonal). One matrix-vector product per probe; the probes go through ``vmap`` in chunks.
With all ``2^d`` sign vectors of a ``d``-dimensional space (pass them as ``probes``) the estimates are
exact, since ``sum_z z z^T = 2^d I``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SciPruneError
from ._operators import CurvatureOperator

__all__ = ["hutchinson_diagonal", "hutchinson_trace"]


def _probe_products(model, data, *, loss, matrix, names, n_samples, seed, probes, chunk, batch_size):
    op = CurvatureOperator(model, data, loss=loss, matrix=matrix, names=names, batch_size=batch_size)
    dim = op.space.dim
    if probes is None:
        if not (isinstance(n_samples, (int, np.integer)) and not isinstance(n_samples, bool) and n_samples >= 1):
            raise SciPruneError(f"n_samples must be a positive integer, got {n_samples!r}")
        g = torch.Generator().manual_seed(int(seed))
        Z = torch.randint(0, 2, (int(n_samples), dim), generator=g).to(op.space.dtype).mul_(2).sub_(1)
    else:
        Z = torch.as_tensor(probes)
        if Z.ndim != 2 or Z.shape[1] != dim:
            raise SciPruneError(f"probes must have shape (m, {dim}) for this space, got {tuple(Z.shape)}")
    if not (isinstance(chunk, int) and chunk >= 1):
        raise SciPruneError(f"chunk must be a positive integer, got {chunk!r}")
    Z = Z.to(device=op.space.device, dtype=op.space.dtype)
    MZ = torch.cat([op.torch_matmat(Z[s : s + chunk]) for s in range(0, Z.shape[0], chunk)])
    return op, Z, MZ


def hutchinson_trace(model: nn.Module, data, *, loss: str, matrix: str = "hessian",
                     names: Sequence[str] | str | None = None, n_samples: int = 100, seed: int = 0,
                     probes: torch.Tensor | None = None, chunk: int = 16,
                     batch_size: int | None = None) -> tuple[float, float]:
    """``(estimate, standard error)`` of ``tr(P M P)`` from Rademacher probes ``z^T M z``.

    ``seed`` seeds a private torch.Generator for the probes; ``probes`` (m, dim), if given, are used
    instead; ``chunk`` probes share one pass over the data. The standard error is ``std / sqrt(m)``
    (0 for a single probe).
    """
    _, Z, MZ = _probe_products(model, data, loss=loss, matrix=matrix, names=names, n_samples=n_samples,
                               seed=seed, probes=probes, chunk=chunk, batch_size=batch_size)
    q = (Z * MZ).sum(1).to(torch.float64)
    m = q.shape[0]
    se = float(q.std(correction=1)) / math.sqrt(m) if m > 1 else 0.0
    return float(q.mean()), se


def hutchinson_diagonal(model: nn.Module, data, *, loss: str, matrix: str = "hessian",
                        names: Sequence[str] | str | None = None, n_samples: int = 100, seed: int = 0,
                        probes: torch.Tensor | None = None, chunk: int = 16,
                        batch_size: int | None = None) -> dict[str, torch.Tensor]:
    """Estimate of ``diag(P M P)``, ``mean_z z * (M z)``, as name -> tensor (zero at pruned entries)."""
    op, Z, MZ = _probe_products(model, data, loss=loss, matrix=matrix, names=names, n_samples=n_samples,
                                seed=seed, probes=probes, chunk=chunk, batch_size=batch_size)
    return op.space.unflatten((Z * MZ).mean(0))
