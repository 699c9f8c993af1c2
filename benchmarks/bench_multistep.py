"""Cost of multi-step pruning (re-scored steps) against one-shot pruning, same criterion, same run.

``sciprune.prune_scheduled(model, method, 0.9, data, schedule={"kind": "multi-step", "steps": S,
"spacing": "geometric"})`` against the same call with ``{"kind": "one-shot"}`` on copies of one network,
interleaved in one process after a warm-up; the table gives the median time over repeats and the median
of the per-repeat ratios to one-shot. Expected: about S for every criterion, since each step re-scores
the partly pruned network and selects again (for ``magnitude`` the selection, a sort of the weights, is
the whole cost; ``obs-layer`` forms its layer Hessians again at every step).

Case: the 2-40x6-1 tanh surrogate after 300 Adam steps on 20,000 random points (MSE), float32.

Run:  python benchmarks/bench_multistep.py --threads 1 --steps 14
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from _common import setup, timed

import sciprune

METHODS = {"magnitude": {}, "ec": {}, "qm": {}, "obs-layer": {"damp": 1e-6}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--ratio", type=float, default=0.9)
    ap.add_argument("--points", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    device, dtype = setup(args)
    g = torch.Generator().manual_seed(0)
    X = (torch.rand(args.points, 2, generator=g) * 2 - 1).to(device, dtype)
    Y = torch.sin(3 * X[:, :1]) * X[:, 1:]
    model = sciprune.MLP(2, [40] * 6, 1, "tanh", seed=0).to(device, dtype)
    sciprune.fit(model, (X, Y), sciprune.TrainConfig(optimizer="adam", lr=1e-3, epochs=300, batch_size=None, seed=0))
    schedules = {"one-shot": {"kind": "one-shot"},
                 f"{args.steps} steps": {"kind": "multi-step", "steps": args.steps, "spacing": "geometric"}}
    print(f"2-40x6-1 tanh, {args.points} points, ratio {args.ratio}, {args.repeats} repeats (+{args.warmup} warm-up)")
    print(f"{'method':12s} {'one-shot s':>11s} {f'{args.steps} steps s':>12s} {'ratio':>7s}")
    for method, options in METHODS.items():
        times: dict[str, list[float]] = {k: [] for k in schedules}
        names = list(schedules)
        for r in range(args.warmup + args.repeats):
            order = names[r % 2:] + names[: r % 2]
            for k in order:
                net = copy.deepcopy(model)
                t = timed(lambda: sciprune.prune_scheduled(net, method, args.ratio, (X, Y), schedule=schedules[k],
                                                           **options), device)
                if r >= args.warmup:
                    times[k].append(t)
        ratio = statistics.median(b / a for a, b in zip(times[names[0]], times[names[1]]))
        print(f"{method:12s} {statistics.median(times[names[0]]):11.3f} {statistics.median(times[names[1]]):12.3f} "
              f"{ratio:7.2f}")


if __name__ == "__main__":
    main()
