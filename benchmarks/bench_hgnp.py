"""What HGNP's flatness penalty costs per training step, and how the refresh interval of v changes it.

One optimiser step of ``sciprune.fit`` (forward, loss, backward, Adam step) is timed without the penalty
and with :class:`sciprune.flatness.FlatnessPenalty` at several ``refresh`` intervals (the steps between
recomputations of the K-FAC factors of the mini-batch and their top eigenvector v). Every step with the
penalty also computes v^T H v by a Hessian-vector product with a graph (double backward) and, where it
exceeds K (K = 0 here, so always), its gradient (a third backward pass). Two networks: the 2-40x6-1 tanh
surrogate (batch 2048, MSE) and LeNet-300-100 ReLU on 8x8 inputs (64-300-100-10, batch 128,
cross-entropy), on random data. The variants are interleaved, the order rotated each repeat, after a
warm-up; the table gives the median ms/step and the median of the per-repeat ratios to plain training.

Run:  python benchmarks/bench_hgnp.py --threads 1
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from _common import interleaved_ms_per_step, setup

import sciprune
from sciprune.flatness import FlatnessPenalty


def cases(device, dtype):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(4096, 2, generator=g, dtype=dtype).to(device)
    yield ("2-40x6-1 tanh, batch 2048, MSE", sciprune.MLP(2, [40] * 6, 1, "tanh", seed=0), X,
           torch.sin(3 * X[:, :1]) * X[:, 1:], 2048)
    Xc = torch.rand(1280, 64, generator=g, dtype=dtype).to(device)
    yield ("64-300-100-10 ReLU, batch 128, cross-entropy", sciprune.MLP(64, [300, 100], 10, "relu", seed=0), Xc,
           torch.randint(0, 10, (1280,), generator=g).to(device), 128)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    ap.add_argument("--refresh", type=int, nargs="+", default=[1, 10, 100])
    args = ap.parse_args()
    device, dtype = setup(args)
    for title, net, X, Y, batch in cases(device, dtype):
        net = net.to(device=device, dtype=dtype)
        steps = args.epochs * -(-X.shape[0] // batch)
        print(f"\n{title}: {steps} steps per run x {args.repeats} repeats (+1 warm-up)")
        names = ["plain"] + [f"penalty, refresh {r}" for r in args.refresh]
        hooks = {}

        def run(name: str) -> None:
            model = copy.deepcopy(net)
            hook = None if name == "plain" else FlatnessPenalty(1e-3, 0.0, int(name.rsplit(" ", 1)[1]))
            sciprune.fit(model, (X, Y), sciprune.TrainConfig(epochs=args.epochs, batch_size=batch, lr=1e-3),
                         hooks=[hook] if hook else None)
            hooks[name] = hook

        for name in names:
            run(name)
        times = interleaved_ms_per_step(run, names, args.repeats, steps, device)
        base = times["plain"]
        print(f"{'version':<22} {'ms/step':>9} {'min':>8} {'max':>8} {'x plain':>8} {'hook ms/step':>13}")
        for name in names:
            t = times[name]
            ratio = statistics.median(a / b for a, b in zip(t, base))
            h = hooks[name]
            hook_ms = f"{h.seconds / h.steps * 1e3:13.2f}" if h is not None else f"{'':>13}"
            print(f"{name:<22} {statistics.median(t):9.2f} {min(t):8.2f} {max(t):8.2f} {ratio:8.2f} {hook_ms}")


if __name__ == "__main__":
    main()
