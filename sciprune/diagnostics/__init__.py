"""Diagnostics of trained and pruned networks: PSP norms and PSP-entropy, loss landscapes, figures.

Every function takes a model (an ``nn.Sequential`` chain of Linear layers and activations) and data,
and returns an :class:`xarray.Dataset` that :func:`sciprune.results.write_dataset` can store.
"""

from .landscape import loss_line, loss_map, plane_directions
from .psp import psp_entropy, psp_norms
from .spectrum import hessian_summary

__all__ = ["psp_norms", "psp_entropy", "loss_line", "loss_map", "plane_directions", "hessian_summary"]
