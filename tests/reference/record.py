"""Record the reference numbers of sciprune's existing studies into ``tests/reference/values.json``.

``tests/test_reference_values.py`` reruns the same reduced studies and compares every metric of their
``results.nc`` with the numbers stored here, so a refactoring that is meant to change nothing (issue 10:
"the quickstart and tests/test_ec_study.py give the same numbers as before the redesign") is shown to
change nothing.

When this script may be rerun
-----------------------------
ONLY when a change is MEANT to change the numbers (a bug fix in a criterion, a new default, a changed
data generator), never to make a failing comparison pass. The commit that rewrites ``values.json`` must
say so in its message, name the change that moved the numbers and why that is intended. The file keeps
the commit it was recorded at (``recorded.commit``) so a reviewer can rerun the old code and compare.

Run from the root of a CLEAN checkout (no uncommitted changes to ``sciprune/`` or ``cases/``: the file
records the commit, and numbers of uncommitted code cannot be traced back)::

    python tests/reference/record.py            # writes tests/reference/values.json
    python tests/reference/record.py --check    # recomputes and prints the largest differences, writes nothing

In a checkout shared with work in progress, record from an export of the commit instead (``git archive``
changes no git state), telling the script which commit the export is::

    git archive HEAD | tar -x -C /tmp/clean && cp -r tests/reference /tmp/clean/tests/
    cd /tmp/clean && PYTHONPATH=. python tests/reference/record.py --commit "$(git -C <checkout> rev-parse HEAD)"
    cp /tmp/clean/tests/reference/values.json <checkout>/tests/reference/

The studies (each run through the same entry a user calls: ``sciprune.pipeline.run_case`` behind
``sciprune run``, ``sciprune.sweep.run_sweep`` behind ``sciprune sweep``):

- ``quickstart_float64`` / ``quickstart_float32``: ``cases/quickstart.toml`` reduced the way
  ``tests/test_pipeline.py::test_reduced_quickstart_end_to_end`` reduces it (nx = 24, 30 + 5 epochs,
  ratios 0.3 and 0.9, widths [8, 8], seeds 0 and 1), in both dtypes;
- ``sweep_quickstart_float64``: the same float64 case through ``run_sweep`` (the batched ensemble path);
- ``ec_diffusion_sorption`` / ``ec_digits``: the reduced EC study cases of ``tests/test_ec_study.py``
  (their case files' dtype, float32), plus ``ec_diffusion_sorption_float64``, the same case in float64
  so that the EC, shifted-ranking and scratch-baseline paths are also held to 1e-12.

Figures are not drawn (``sciprune.pipeline._figures`` is replaced by a no-op; they are tested
elsewhere) and surrogates are not saved (``save_models = false``): neither changes a number.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

ROOT = Path(__file__).resolve().parents[2]
VALUES = Path(__file__).resolve().parent / "values.json"

def _quickstart(work: Path, dtype: str, out: str):
    """``cases/quickstart.toml`` reduced as in ``tests/test_pipeline.py`` (data file shared in ``work``)."""
    from sciprune.config import load_case

    return load_case(ROOT / "cases" / "quickstart.toml", {
        "output": str(work / out), "dtype": dtype, "data.file": str(work / "quickstart_nx24.h5"),
        "data.generate.nx": 24, "train.epochs": 30, "finetune.epochs": 5, "prune.ratios": [0.3, 0.9],
        "model.widths": [8, 8], "seeds": [0, 1], "save_models": False,
    })


def _ec_reduced(work: Path, case_file: str, out: str, **extra):
    """A case of the EC study reduced as in ``tests/test_ec_study.py::_reduced``."""
    from sciprune.config import load_case

    overrides = {
        "output": str(work / out), "seeds": [0], "prune.ratios": [0.5, 0.9], "prune.snapshot_ratio": 0.5,
        "train.epochs": 5, "finetune.epochs": 2, "save_models": False, **extra,
    }
    return load_case(ROOT / "cases" / case_file, overrides)


def _ec_diffusion_sorption(work: Path, out: str, **extra):
    return _ec_reduced(work, "ec_diffusion_sorption.toml", out, **{
        "data.file": str(work / "ds_nx16.h5"), "data.generate.nx": 16, "noise.levels": [0.0, 0.05],
        "architectures": {"tiny": {"widths": [4, 4], "activation": "tanh"}}, **extra})


def _ec_digits(work: Path, out: str):
    return _ec_reduced(work, "ec_digits.toml", out, **{
        "model": {"kind": "mlp", "widths": [16], "activation": "relu"}, "prune.methods": ["ec", "magnitude"],
        "prune.compensate": ["magnitude"], "prune.no_compensate": []})


def _run(case) -> Path:
    from sciprune.pipeline import run_case

    return run_case(case, show_progress=False, echo=lambda s: None)


def _sweep(case) -> Path:
    from sciprune.sweep import run_sweep

    return run_sweep(case, show_progress=False, echo=lambda s: None)


#: name -> (entry point, case builder). Every study the test compares; keep the whole set fast (a few s).
STUDIES: dict[str, tuple[Callable, Callable]] = {
    "quickstart_float64": (_run, lambda w: _quickstart(w, "float64", "quickstart_float64")),
    "quickstart_float32": (_run, lambda w: _quickstart(w, "float32", "quickstart_float32")),
    "sweep_quickstart_float64": (_sweep, lambda w: _quickstart(w, "float64", "sweep_quickstart_float64")),
    "ec_diffusion_sorption": (_run, lambda w: _ec_diffusion_sorption(w, "ec_diffusion_sorption")),
    "ec_diffusion_sorption_float64": (_run, lambda w: _ec_diffusion_sorption(w, "ec_diffusion_sorption_float64",
                                                                              dtype="float64")),
    "ec_digits": (_run, lambda w: _ec_digits(w, "ec_digits")),
}


def _plain(values: np.ndarray) -> list:
    """Nested Python lists of floats (or ints); ``json`` writes floats with ``repr``, exact round trip."""
    if values.dtype.kind in "iub":
        return values.astype(np.int64).tolist()
    return values.astype(np.float64).tolist()


def metrics(path: Path) -> dict[str, dict]:
    """Every data variable of a results file: ``{name: {"dims", "coords", "values"}}`` (coordinates as
    lists, values nested lists in the order of ``dims``)."""
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        ds = ds.load()
    out = {}
    for name in sorted(ds.data_vars):
        da = ds[name]
        out[name] = {
            "dims": list(da.dims),
            "coords": {d: _plain(da[d].values) if da[d].dtype.kind in "iuf" else [str(c) for c in da[d].values]
                       for d in da.dims},
            "values": _plain(np.asarray(da.values)),
        }
    return out


def compute(name: str, work: Path) -> dict:
    """Run study ``name`` with its outputs and data files under ``work`` (studies on the same data share
    the file, made by the first); its dtype and metrics."""
    import sciprune.pipeline

    entry, build = STUDIES[name]
    case = build(work)
    saved = sciprune.pipeline._figures
    sciprune.pipeline._figures = lambda *a, **k: None  # figures are tested elsewhere and change no number
    try:
        path = entry(case)
    finally:
        sciprune.pipeline._figures = saved
    return {"dtype": case.dtype, "variables": metrics(path)}


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        # --no-optional-locks: read only (status would otherwise refresh the index file)
        dirty = subprocess.run(["git", "--no-optional-locks", "status", "--porcelain", "--", "sciprune", "cases"],
                               cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + (" (with uncommitted changes in sciprune/ or cases/)" if dirty.stdout.strip() else "")


def environment() -> dict[str, str]:
    """What decides the floating-point results besides sciprune's code: the torch and numpy versions, the
    CPU kernels torch dispatches to (its vectorised reductions sum in an order that depends on them) and
    the machine's architecture. ``tests/test_reference_values.py`` holds the numbers to 1e-12 only where
    all of these match the recording."""
    return {
        "torch": torch.__version__.split("+")[0], "numpy": np.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
    }


def record(work: Path, commit: str | None = None) -> dict:
    """All studies computed in ``work`` with what they were recorded with (``commit``: the commit the
    code is, when it is not a git checkout; by default ``git rev-parse HEAD`` of this repository)."""
    import sciprune

    here = Path(sciprune.__file__).resolve().parents[1]
    if here != ROOT:
        raise SystemExit(f"sciprune is imported from {here}, not from {ROOT} beside this script; "
                         f"run with PYTHONPATH={ROOT}")
    torch.set_num_threads(1)  # as under pytest (tests/conftest.py)
    return {
        "recorded": {
            "commit": commit or _commit(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "sciprune": sciprune.__version__,
            "torch_full": torch.__version__, "xarray": xr.__version__, "python": platform.python_version(),
            "system": platform.system(), "torch_threads": torch.get_num_threads(), **environment(),
        },
        "studies": {name: compute(name, work) for name in STUDIES},
    }


def dumps(obj, indent: str = "") -> str:
    """JSON with one key per line and each list on one line (floats as ``repr``: exact round trip)."""
    if not isinstance(obj, dict):
        return json.dumps(obj)
    inner = indent + " "
    items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="recompute and print the largest relative "
                        "differences from values.json; write nothing")
    parser.add_argument("--output", type=Path, default=VALUES, help="where to write (default: %(default)s)")
    parser.add_argument("--commit", help="the commit this code is (when it is an export, not a git checkout)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        new = record(Path(tmp), args.commit)
    if args.check:
        old = json.loads(VALUES.read_text())
        for name, study in new["studies"].items():
            worst = 0.0
            for var, rec in old["studies"][name]["variables"].items():
                a = np.asarray(study["variables"].get(var, {}).get("values", np.nan), float)
                b = np.asarray(rec["values"], float)
                if a.shape != b.shape:  # missing or reshaped: the test says which
                    worst = np.inf
                    continue
                worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300), initial=0.0)))
            print(f"{name:32s} largest relative difference {worst:.3e}")
        return 0
    args.output.write_text(dumps(new) + "\n")
    print(f"wrote {args.output} at {new['recorded']['commit']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
