"""The curvature summary of a trained (or pruned) network: top Hessian eigenvalues, trace, K-FAC radius.

Sharp minima have large top eigenvalues lambda_1..k and trace of the loss Hessian (Keskar et al. 2017);
the K-FAC spectral radius max_l lambda_max(A_l) lambda_max(G_l) (Martens & Grosse 2015) is the cheap
layer-wise proxy that flatness-aware neuron pruning uses. Pruned weights are outside the space.
"""

from __future__ import annotations

import numpy as np
import xarray as xr
from torch import nn

from ..curvature import hutchinson_trace, kfac_factors, kfac_spectral_radius, top_eigenpairs
from ..errors import SciPruneError

__all__ = ["hessian_summary"]


def hessian_summary(model: nn.Module, data, *, loss: str, k: int = 5, tol: float = 1e-3, names=None,
                    trace_samples: int = 0, seed: int = 0, batch_size: int | None = None,
                    kfac: bool = True) -> xr.Dataset:
    """Top-``k`` Hessian eigenvalues (Lanczos) with residuals, a Hutchinson trace estimate
    (``trace_samples`` Rademacher probes; 0 skips it) and the per-layer K-FAC factors' top eigenvalues.

    Returns a Dataset with ``eigenvalue`` and ``residual`` on ``k``; ``kfac_lambda_A``,
    ``kfac_lambda_G`` and ``kfac_radius`` on ``layer``; attributes ``n_products``, ``trace``,
    ``trace_stderr``, ``kfac_spectral_radius``, ``kfac_layer``, ``dim`` (size of the space).
    """
    if trace_samples < 0:
        raise SciPruneError(f"trace_samples must be >= 0, got {trace_samples}")
    eig = top_eigenpairs(model, data, k=k, loss=loss, tol=tol, names=names, seed=seed, batch_size=batch_size)
    ds = xr.Dataset(
        {"eigenvalue": ("k", np.asarray(eig.values, dtype=np.float64)),
         "residual": ("k", np.asarray(eig.residuals, dtype=np.float64))},
        coords={"k": np.arange(1, len(eig.values) + 1)},
    )
    ds.attrs.update(n_products=int(eig.n_products), dim=int(eig.space.dim), tol=float(tol), loss=loss,
                    method=eig.method, wall_s=float(eig.wall_s), converged=int(all(eig.converged)),
                    parameters=",".join(eig.space.names))
    if trace_samples:
        est, err = hutchinson_trace(model, data, loss=loss, names=names, n_samples=trace_samples, seed=seed,
                                    batch_size=batch_size)
        ds.attrs.update(trace=float(est), trace_stderr=float(err), trace_samples=int(trace_samples))
    if kfac:
        factors = kfac_factors(model, data, loss=loss, batch_size=batch_size)
        layers = list(factors)
        import torch

        lam_a = [float(torch.linalg.eigvalsh(factors[n].A.double())[-1]) for n in layers]
        lam_g = [float(torch.linalg.eigvalsh(factors[n].G.double())[-1]) for n in layers]
        ds["kfac_lambda_A"] = ("layer", np.array(lam_a))
        ds["kfac_lambda_G"] = ("layer", np.array(lam_g))
        ds["kfac_radius"] = ("layer", np.array(lam_a) * np.array(lam_g))
        ds = ds.assign_coords(layer=layers)
        radius, layer, _ = kfac_spectral_radius(factors)
        ds.attrs.update(kfac_spectral_radius=float(radius), kfac_layer=str(layer))
    return ds
