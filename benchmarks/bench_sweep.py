"""One study, two engines: wall time of ``sciprune run`` (per-model loop) vs ``sciprune sweep``.

The study is ``cases/noise_robustness_ci.toml`` with the settings below overridden (by default
float32, 3 seeds, 4 ratios, more epochs): both engines run it in this process, each into a fresh
folder, ``--repeats`` times alternately (median reported), so a loaded machine affects both alike.
With ``--case`` a real study's case runs instead, on a sample of its grid (``--seeds`` seeds and
``--levels``, its own settings otherwise): both times are then also scaled to its whole grid
(x seeds x levels of the case / of the sample), the estimate of what ``run`` would take beside the
study's own sweep.
``sciprune run`` also draws its figures; they are switched off here so that only the computation is
timed (the sweep draws none). Both engines share the data file, generated before timing.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py --seeds 3 --epochs 100 --finetune-epochs 30
      python benchmarks/bench_sweep.py --threads 1 --case cases/noise_robustness_cpu.toml --seeds 1 --levels 0.05
      python benchmarks/bench_sweep.py --device cuda --seeds 5 --epochs 500 --finetune-epochs 100
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch

import sciprune.pipeline as pipeline
from sciprune.config import load_case
from sciprune.sweep import run_sweep
from sciprune.tasks import ensure_data

CASE = Path(__file__).resolve().parents[1] / "cases" / "noise_robustness_ci.toml"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--case", type=Path, default=None, help="a study's case file, run on a sample of its grid")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default=None, choices=["float32", "float64"], help="default: float32 (CI case)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--levels", type=float, nargs="+", default=None, help="noise levels (default: the case's)")
    ap.add_argument("--ratios", type=float, nargs="+", default=None, help="default: 0.5 0.7 0.8 0.9 (CI case)")
    ap.add_argument("--epochs", type=int, default=None, help="dense and scratch training epochs (CI case: 100)")
    ap.add_argument("--finetune-epochs", type=int, default=None, help="CI case: 30")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    case_file = args.case or CASE
    defaults = {} if args.case else {"dtype": "float32", "prune.ratios": [0.5, 0.7, 0.8, 0.9], "train.epochs": 100,
                                     "finetune.epochs": 30}
    given = {"dtype": args.dtype, "prune.ratios": args.ratios, "train.epochs": args.epochs,
             "finetune.epochs": args.finetune_epochs, "noise.levels": args.levels}
    overrides = {**defaults, **{k: v for k, v in given.items() if v is not None},
                 "device": args.device, "seeds": list(range(args.seeds)), "data.file": str(tmp / "data.h5")}
    full = load_case(case_file)
    case = load_case(case_file, overrides)
    ensure_data(case.data)
    pipeline._figures = lambda *a, **k: None  # time the computation only (see the module docstring)
    quiet = dict(show_progress=False, echo=lambda s: None)
    times: dict[str, list[float]] = {"sciprune run": [], "sciprune sweep": []}
    n_runs = None
    try:
        for rep in range(args.repeats):
            for name in times:
                out = tmp / f"{name.split()[1]}{rep}"
                c = load_case(case_file, {**overrides, "output": str(out)})
                t = time.perf_counter()
                if name == "sciprune run":
                    pipeline.run_case(c, **quiet)
                else:
                    run_sweep(c, **quiet)
                    n_runs = len(list((out / "sweep" / "runs").glob("*.json")))
                times[name].append(time.perf_counter() - t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"study {case_file.name}: {len(case.models)} architectures x {len(case.noise.levels)} noise levels x "
          f"{args.seeds} seeds, {len(case.prune.variants)} variants x {len(case.prune.ratios)} ratios + scratch = "
          f"{n_runs} runs; epochs {case.train.epochs}/{case.finetune.epochs}; {args.device} {case.dtype}, "
          f"torch threads {torch.get_num_threads()}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:16s} {v:8.2f} s   ({n_runs / v:6.1f} runs/s)")
    print(f"speed-up of the sweep: {med['sciprune run'] / med['sciprune sweep']:.2f}x")
    scale = len(full.seeds) * len(full.noise.levels) / (args.seeds * len(case.noise.levels))
    if args.case and scale != 1:
        print(f"whole grid ({len(full.seeds)} seeds x {len(full.noise.levels)} levels, x{scale:g} this sample), "
              f"one process: run {med['sciprune run'] * scale / 60:.1f} min, sweep {med['sciprune sweep'] * scale / 60:.1f} min")


if __name__ == "__main__":
    main()
