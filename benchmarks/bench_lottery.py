"""A lottery-ticket study on the ensemble engine against the per-model loop, same run.

LeNet-300-100 (ReLU; ``sciprune.lenet_300_100(64, 10)``) on scikit-learn's bundled 8x8 digits (1797 images,
pixels / 16, cross-entropy), open_lth's LeNet settings: SGD lr 0.1 (momentum 0), batch 128, global magnitude
pruning of 20% of the remaining weights per level, output layer excluded, rewinding to step
``--rewind`` (0: the lottery ticket). ``--levels`` levels (the target is the pool sparsity the ceil rule
reaches at that level, so the schedule has exactly that many), ``--members`` members, each with its own
initialisation and shuffling seed:

(1) ``loop``: ``sciprune.lottery.lottery_ticket`` member after member (``--loop-members`` of them; the
    time is scaled to all members when fewer are run, and the table says so);
(2) ``ensemble``: ``sciprune.lottery.lottery_tickets`` on all members at once (``sciprune.ensemble.fit_many``
    per level).

Both start from the same initial weights; the last column checks they agree (largest difference of the
final training losses of the members run both ways). Each version is run once (a lottery study is long);
one untimed warm-up training of one epoch precedes them.

Smoke (tiny):  python benchmarks/bench_lottery.py --device cpu --threads 1 --members 2 --levels 2 --epochs 1
Full size:     python benchmarks/bench_lottery.py --device cpu --threads 2 --members 32 --levels 20 --epochs 40
               python benchmarks/bench_lottery.py --device cuda --members 32 --levels 20 --epochs 40
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
from _common import setup, timed

import sciprune
from sciprune.data.classification_sources import load_digits_default
from sciprune.lottery import lottery_ticket, lottery_tickets
from sciprune.training import TrainConfig


def level_target(n: int, levels: int, fraction: float) -> float:
    """The pool sparsity after ``levels`` levels of open_lth's rule c <- c + ceil(f (n - c))."""
    c = 0
    for _ in range(levels):
        c += math.ceil(fraction * (n - c))
    return c / n


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--members", type=int, default=32)
    ap.add_argument("--loop-members", type=int, default=None, help="members the per-model loop runs (default all)")
    ap.add_argument("--levels", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--rewind", type=int, default=0, help="rewinding step k (optimiser steps)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
    device, dtype = setup(args)

    images, labels = load_digits_default()
    X = torch.as_tensor(images.reshape(len(images), -1) / 16.0, dtype=dtype, device=device)
    Y = torch.as_tensor(labels, device=device)
    M, loop_m = args.members, min(args.loop_members or args.members, args.members)
    models = [sciprune.lenet_300_100(64, 10, seed=s).to(device=device, dtype=dtype) for s in range(M)]
    pool = 64 * 300 + 300 * 100
    target = level_target(pool, args.levels, args.fraction)
    cfgs = [TrainConfig(optimizer="sgd", lr=args.lr, momentum=0.0, epochs=args.epochs, batch_size=args.batch, seed=s)
            for s in range(M)]
    common = dict(target=target, fraction=args.fraction, rewind_step=args.rewind, exclude=["output"])

    sciprune.fit(copy.deepcopy(models[0]), (X, Y), TrainConfig(optimizer="sgd", lr=args.lr, epochs=1,
                                                               batch_size=args.batch))
    loop_models = copy.deepcopy(models[:loop_m])
    loop_res = []
    t_loop = timed(lambda: loop_res.extend(lottery_ticket(m, (X, Y), c, **common)
                                           for m, c in zip(loop_models, cfgs)), device)
    ens_res = []
    t_ens = timed(lambda: ens_res.extend(lottery_tickets(models, (X, Y), cfgs, **common)), device)

    levels = len(ens_res[0].levels) - 1
    diff = max(abs(a.levels[-1].train_loss - b.levels[-1].train_loss) for a, b in zip(loop_res, ens_res))
    scaled = t_loop * M / loop_m
    steps = (levels + 1) * args.epochs * math.ceil(len(X) / args.batch)
    print(f"\nLeNet-300-100, digits ({len(X)} images), SGD lr {args.lr}, batch {args.batch}, {args.epochs} epochs "
          f"per level, {levels} levels to pool sparsity {target:.4f} (f = {args.fraction}, k = {args.rewind}), "
          f"{M} members, about {steps} optimiser steps per member")
    print(f"{'version':<12} {'seconds':>10} {'members/s':>10} {'vs loop':>8} {'max |dL| final':>15}")
    note = "" if loop_m == M else f"  (measured on {loop_m} members, scaled to {M})"
    print(f"{'loop':<12} {scaled:>10.2f} {M / scaled:>10.3f} {1.0:>8.2f} {'':>15}{note}")
    print(f"{'ensemble':<12} {t_ens:>10.2f} {M / t_ens:>10.3f} {scaled / t_ens:>8.2f} {diff:>15.2e}")


if __name__ == "__main__":
    main()
