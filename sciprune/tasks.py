"""Build a learning task from a data specification: the one place the pipeline and CLI load data.

A saved model records the specification (``provenance["data"]``) so that ``sciprune prune`` and
``sciprune evaluate`` can rebuild exactly the same split and noise realisation later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import DataSpec
from .data._types import TaskData
from .errors import SciPruneError

__all__ = ["LoadedTask", "ensure_data", "build_task"]


@dataclass(frozen=True)
class LoadedTask:
    """A task plus, for coordinate regression, the full physical grid to draw u(x, t) fields.

    ``grid_inputs``: (Nt*Nx, 2) physical (x, t); ``clean_field``/``noisy_field``: (Nt, Nx).
    """

    task: TaskData
    grid_inputs: np.ndarray | None = None
    clean_field: np.ndarray | None = None
    noisy_field: np.ndarray | None = None
    x: np.ndarray | None = None
    t: np.ndarray | None = None

    def to(self, device=None, dtype: torch.dtype | None = None) -> "LoadedTask":
        """The same, with the task's tensors on ``device`` (and floats in ``dtype``)."""
        return replace(self, task=self.task.to(device, dtype))


def ensure_data(spec: DataSpec, *, progress: Callable[[int, int], None] | None = None) -> bool:
    """Make sure the diffusion-sorption file of ``spec`` holds every sample ``[data.generate]`` asks
    for; True if any sample was written.

    With ``[data.generate]`` the generator is always called, so a file left incomplete by an
    interruption (0 bytes, no samples, a half-written sample, samples missing) is completed, never
    trusted: it resumes exactly as ``sciprune generate diffusion-sorption`` does
    (:func:`sciprune.data.diffsorp.generate`), and a file that already holds every sample is only
    read. Without ``[data.generate]`` an existing file is used as it is (the reader validates it)
    and a missing one is an error.
    """
    if spec.kind != "pdebench":
        return False
    g = spec.generate
    if g is None:
        if not Path(spec.file).exists():
            raise SciPruneError(f"{spec.file}: no such file (add a [data.generate] section to make it)")
        return False
    from .data.diffsorp import ForeignFileError, generate

    # DataSpec itself refuses a sample that [data.generate] does not make.
    written = 0

    def count(done: int, total: int) -> None:
        nonlocal written
        written += 1
        if progress is not None:
            progress(done, total)

    try:
        generate(spec.file, n_samples=g.samples, nx=g.nx, nt=g.nt, mode=g.mode, workers=g.workers,
                 progress=count)
    except ForeignFileError as err:
        raise SciPruneError(f"data.file = {spec.file!r} with [data.generate]: {err}; to use this file "
                            "as it is, remove the [data.generate] section") from None
    return written > 0


def build_task(
    spec: DataSpec,
    *,
    noise_kind: str = "none",
    noise_level: float = 0.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> LoadedTask:
    """Load the data of ``spec``, add seeded noise (regression), split with ``seed``."""
    if spec.kind == "classification":
        from .data.classification import classification_task, load_classification

        images, labels, t_images, t_labels, prov = load_classification(spec.source)
        task = classification_task(
            images, labels, test_images=t_images, test_labels=t_labels, val_fraction=spec.val_fraction,
            test_fraction=spec.test_fraction, seed=seed, dtype=dtype, provenance=prov,
        )
        return LoadedTask(task)

    from .data.coords import coordinate_task, grid_inputs
    from .data.noise import NoiseModel

    from .data.pdebench import open_pdebench

    noise = NoiseModel("none", 0.0) if noise_level == 0 else NoiseModel(noise_kind, float(noise_level))
    with open_pdebench(spec.file) as f:
        sample = f.sample(spec.sample)
    task = coordinate_task(
        sample, noise=noise, split=spec.split, test_fraction=spec.test_fraction,
        val_fraction=spec.val_fraction, seed=seed, dtype=dtype,
    )
    clean = np.asarray(sample.values, dtype=np.float64)
    noisy = noise.apply(clean.reshape(-1, 1), seed=seed).reshape(clean.shape)
    return LoadedTask(
        task, grid_inputs=grid_inputs(sample), clean_field=clean, noisy_field=noisy,
        x=np.asarray(sample["x"].values), t=np.asarray(sample["t"].values),
    )
