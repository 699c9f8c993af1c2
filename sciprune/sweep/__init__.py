"""Resumable sweeps on the ensemble engine: ``sciprune sweep CASE.toml``, optionally on Dask.

A case file's grid (architectures x noise levels x seeds x variants x ratios, plus dense and scratch
runs) is cut into runs keyed by a hash of their configuration (:mod:`._grid`); finished runs are
stored one file each under ``<output>/sweep/`` (:mod:`._store`) and skipped on restart; batches of
runs train as ensembles (:mod:`._work`), in this process or on a Dask cluster (:mod:`._dask`); the
end result is ``<output>/results.nc`` in the layout of ``sciprune run``.
"""

from ._dask import DaskEngine, dask_client
from ..study import check_case
from ._grid import Run, build_grid
from ._local import LocalEngine, run_sweep
from ._store import SweepStore

__all__ = ["run_sweep", "build_grid", "check_case", "Run", "SweepStore", "LocalEngine", "DaskEngine", "dask_client"]
