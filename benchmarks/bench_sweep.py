"""One study, two engines: wall time of ``sciprune run`` (per-model loop) vs ``sciprune sweep``.

The study is ``cases/noise_robustness_ci.toml`` with the settings below overridden (by default
float32, 3 seeds, 4 ratios, more epochs): both engines run it in this process, each into a fresh
folder, ``--repeats`` times alternately (median reported), so a loaded machine affects both alike.
``sciprune run`` also draws its figures; they are switched off here so that only the computation is
timed (the sweep draws none). Both engines share the data file, generated before timing.

Run:  OMP_NUM_THREADS=1 python benchmarks/bench_sweep.py --seeds 3 --epochs 100 --finetune-epochs 30
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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9])
    ap.add_argument("--epochs", type=int, default=100, help="dense and scratch training epochs")
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    overrides = {"device": args.device, "dtype": args.dtype, "seeds": list(range(args.seeds)),
                 "prune.ratios": args.ratios, "train.epochs": args.epochs,
                 "finetune.epochs": args.finetune_epochs, "data.file": str(tmp / "data.h5")}
    case = load_case(CASE, overrides)
    ensure_data(case.data)
    pipeline._figures = lambda *a, **k: None  # time the computation only (see the module docstring)
    quiet = dict(show_progress=False, echo=lambda s: None)
    times: dict[str, list[float]] = {"sciprune run": [], "sciprune sweep": []}
    n_runs = None
    try:
        for rep in range(args.repeats):
            for name in times:
                out = tmp / f"{name.split()[1]}{rep}"
                c = load_case(CASE, {**overrides, "output": str(out)})
                t = time.perf_counter()
                if name == "sciprune run":
                    pipeline.run_case(c, **quiet)
                else:
                    run_sweep(c, **quiet)
                    n_runs = len(list((out / "sweep" / "runs").glob("*.json")))
                times[name].append(time.perf_counter() - t)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"study: {len(case.models)} architectures x {len(case.noise.levels)} noise levels x {args.seeds} seeds, "
          f"{len(case.prune.variants)} variants x {len(args.ratios)} ratios + scratch = {n_runs} runs; "
          f"epochs {args.epochs}/{args.finetune_epochs}; {args.device} {args.dtype}, torch threads {torch.get_num_threads()}")
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:16s} {v:8.2f} s   ({n_runs / v:6.1f} runs/s)")
    print(f"speed-up of the sweep: {med['sciprune run'] / med['sciprune sweep']:.2f}x")


if __name__ == "__main__":
    main()
