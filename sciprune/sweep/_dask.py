"""Run the batches of a sweep on a Dask cluster (``pip install 'sciprune[cluster]'``).

Each batch is one ``client.submit`` of a pure function of its arguments (the case, the coordinates,
a dense state_dict); results come back to the client in completion order (``as_completed``), and the
client alone writes them to the store. A worker that dies mid-batch loses nothing stored: the
scheduler runs its batch again on another worker, and ``retries`` re-runs batches that raised.
Workers need sciprune installed and must see the case's data file at the same path as the client
(the client generates it if missing, before any batch is submitted).

GPUs: every worker computes on the case's device. On a node with several GPUs start one worker per
GPU, each seeing one (``CUDA_VISIBLE_DEVICES``, as ``dask_cuda.LocalCUDACluster`` does) and keep
``device = "cuda"``; if the workers declare a ``GPU`` resource (``dask worker --resources GPU=1``),
batches of a CUDA case ask for one GPU each, so no two share a device.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import SciPruneError
from ._local import Job

__all__ = ["DaskEngine", "dask_client"]


def _distributed():
    try:
        import distributed
    except ImportError:
        raise SciPruneError("--workers / --scheduler need Dask: pip install 'sciprune[cluster]' "
                            "(or 'dask[distributed]')") from None
    return distributed


class DaskEngine:
    """Submits each batch to ``client`` (retried ``retries`` times) and yields results as they finish."""

    def __init__(self, client, *, device: str = "cpu", retries: int = 2) -> None:
        distributed = _distributed()
        self.client, self.retries = client, retries
        self._done = distributed.as_completed(with_results=True)
        self._jobs: dict[str, Job] = {}
        self.resources = None
        if device.startswith("cuda"):
            workers = client.scheduler_info().get("workers", {}).values()
            if any("GPU" in (w.get("resources") or {}) for w in workers):
                self.resources = {"GPU": 1}

    def submit(self, job: Job) -> None:
        fut = self.client.submit(job.fn, *job.args, **job.kwargs, pure=False, retries=self.retries,
                                 resources=self.resources)
        self._jobs[fut.key] = job
        self._done.add(fut)

    def completed(self) -> Iterator[tuple[Job, Any]]:
        for fut, result in self._done:
            yield self._jobs.pop(fut.key), result
            fut.release()


#: A scheduler address: optional protocol, a host name or IP (IPv6 in brackets) and a port.
_ADDRESS = re.compile(r"(?:(?:tcp|tls|ucx|ws|wss)://)?(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}")


@contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None):
    """A ``distributed.Client``: on a new ``LocalCluster`` of ``workers`` single-threaded worker
    processes, or connected to the scheduler at ``scheduler`` (``tcp://host:8786``)."""
    if (workers is None) == (scheduler is None):
        raise SciPruneError("give exactly one of --workers N (a local cluster) or --scheduler ADDRESS")
    distributed = _distributed()
    if scheduler is not None:
        if not _ADDRESS.fullmatch(scheduler):
            raise SciPruneError(f"--scheduler must be a Dask scheduler address like tcp://host:8786, got {scheduler!r}")
        try:
            client = distributed.Client(scheduler, timeout="20s")
        except (OSError, TimeoutError, ValueError) as err:
            raise SciPruneError(f"--scheduler {scheduler}: cannot connect ({err})") from None
        with client:
            yield client
        return
    if workers < 1:
        raise SciPruneError(f"--workers must be >= 1, got {workers}")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client
