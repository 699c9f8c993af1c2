"""``sciprune sweep``: a case file's whole grid as resumable runs on the ensemble engine (or Dask)."""

from __future__ import annotations

import click

from ._cli_base import PathArg

__all__ = ["sweep"]


@click.command()
@click.argument("case_file", type=PathArg())
@click.option("--output", default=None, help="Override the case's output directory.")
@click.option("--device", default=None, help="Override the case's device (cpu, cuda, cuda:1).")
@click.option("--members", default=None, type=click.IntRange(min=1),
              help="Most models trained at once in one ensemble (default: sized from memory).")
@click.option("--workers", default=None, type=click.IntRange(min=1),
              help="Run batches on a new local Dask cluster of N single-threaded worker processes.")
@click.option("--scheduler", default=None, help="Run batches on an existing Dask cluster (tcp://host:8786).")
@click.option("--wait", is_flag=True,
              help="If another process is using the output folder, wait for it to finish instead of exiting.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep(case_file, output, device, members, workers, scheduler, wait, quiet) -> None:
    """Run every (architecture, noise, seed, method, ratio) of a case; resumable, results.nc at the end.

    Finished runs are kept in OUTPUT/sweep/ and skipped when the command is run again (recomputed,
    with a message, when the data file's contents changed or a stored record is damaged). One process
    at a time writes an output folder: a second one exits with code 2, or waits with --wait.
    """
    from .config import load_case
    from .errors import SciPruneError
    from .sweep import DaskEngine, check_case, dask_client, run_sweep

    overrides = {k: v for k, v in (("output", output), ("device", device)) if v}
    case = load_case(case_file, overrides)
    if workers is not None and scheduler is not None:
        raise SciPruneError("give either --workers or --scheduler, not both")
    opts = dict(case_path=case_file, max_members=members, echo=click.echo, show_progress=not quiet, wait=wait)
    if workers is None and scheduler is None:
        path = run_sweep(case, **opts)
    else:
        check_case(case, local=False)  # before a cluster starts
        with dask_client(workers=workers, scheduler=scheduler) as client:
            click.echo(f"dask: {len(client.scheduler_info()['workers'])} workers at {client.scheduler.address}")
            path = run_sweep(case, engine=DaskEngine(client, device=case.device), **opts)
    click.echo(f"wrote {path}")
