"""Scoring many members at once: :func:`sciprune.ensemble.score_ensemble` vs a loop of ``sciprune.scores``.

M members of the 2-64x4-1 tanh coordinate network (own weights, own noisy targets on shared
coordinates) are scored on ``--points`` points (default 20,000) with each method of ``--methods``
(default ``ec gradient``): (1) a loop of ``sciprune.pruning.score_result`` over the members,
(2) one ``score_ensemble`` call. One untimed warm-up each, then the median of ``--repeats`` timings.
The maximum relative difference of the scores between (1) and (2) is printed as a check.

Run:  python benchmarks/bench_ensemble_scores.py --device cpu --threads 1 --members 32
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import setup, timed

import sciprune
from sciprune.ensemble import score_ensemble
from sciprune.pruning import score_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--points", type=int, default=20_000)
    ap.add_argument("--methods", nargs="+", default=["ec", "gradient"])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    device, dtype = setup(args)
    M, n = args.members, args.points
    g = torch.Generator().manual_seed(0)
    X = torch.rand(n, 2, generator=g) * 2 - 1
    u = torch.sin(torch.pi * X[:, :1]) * torch.exp(-X[:, 1:])
    datas = [(X.to(device, dtype), (u + 0.01 * torch.randn(n, 1, generator=g)).to(device, dtype)) for _ in range(M)]
    models = [sciprune.MLP(2, [64] * 4, 1, "tanh", seed=s).to(device=device, dtype=dtype) for s in range(M)]
    print(f"2-64x4-1 tanh, M={M} members, {n} points")
    print(f"{'method':>14} {'loop s':>9} {'ensemble s':>11} {'speed-up':>9} {'max rel diff':>13}")
    for method in args.methods:
        out = {}

        def loop(method=method, out=out):
            out["loop"] = [score_result(m, method, d) for m, d in zip(models, datas)]

        def batched(method=method, out=out):
            out["ens"] = score_ensemble(models, method, datas)

        ts = {}
        for name, fn in (("loop", loop), ("ens", batched)):
            fn()
            ts[name] = statistics.median(timed(fn, device) for _ in range(args.repeats))
        diff = max(float((e.scores[k] - r.scores[k]).abs().max() / r.scores[k].abs().max())
                   for e, r in zip(out["ens"], out["loop"]) for k in r.scores)
        print(f"{method:>14} {ts['loop']:9.3f} {ts['ens']:11.3f} {ts['loop'] / ts['ens']:8.2f}x {diff:13.2e}")


if __name__ == "__main__":
    main()
