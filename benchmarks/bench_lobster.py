"""Cost of the LOBSTER step (sciprune.lobster) against plain masked training, same run.

Versions, each a ``sciprune.fit`` of ``--steps`` full-batch optimiser steps from the same half-pruned
network (magnitude, 50%: every step is a masked step):

(a) ``masked``: no hook, the masks held by ``MaskedStep`` (the baseline);
(b) ``lobster``: ``Lobster(1e-4)``, w <- w - lam w relu(1 - |g|) after every step (issue 11: <= 10% over (a));
(c) ``lobster-scaled``: sciprune's ``ScaledLobster(1e-4)`` (a running gradient scale per tensor).

The thresholding at a plateau costs validation passes, not steps: it is not timed here (the
bisection makes about log2((T_max - T_min) / 1e-10) <= 40 passes per thresholding).
With ``--members M`` the same three versions run in the ensemble engine (``fit_many``, M members).
The table gives the median over interleaved repeats of ms/step and of the per-repeat ratio to (a).

Run:  python benchmarks/bench_lobster.py --device cpu --threads 1
"""

from __future__ import annotations

import argparse
import copy

import torch
from _common import interleaved_ms_per_step, print_ratio_table, setup

import sciprune
from sciprune.ensemble import fit_many
from sciprune.lobster import Lobster, ScaledLobster

VARIANTS = ("masked", "lobster", "lobster-scaled")


def _hooks(name: str):
    return {"masked": None, "lobster": [Lobster(1e-4)], "lobster-scaled": [ScaledLobster(1e-4)]}[name]


def bench(title: str, bases: list, data, *, steps: int, repeats: int, device) -> None:
    cfg = sciprune.TrainConfig(lr=1e-4, epochs=steps)

    def run(name: str) -> None:
        models = [copy.deepcopy(b) for b in bases]
        if len(models) == 1:
            sciprune.fit(models[0], data, cfg, hooks=_hooks(name))
        else:
            fit_many(models, data, cfg, hooks=_hooks(name))

    for name in VARIANTS:  # warm-up
        run(name)
    times = interleaved_ms_per_step(run, VARIANTS, repeats, steps, device)
    print(f"\n{title}: {steps} full-batch steps per fit x {repeats} repeats")
    print_ratio_table(times, "masked", width=15)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--steps", type=int, default=300, help="optimiser steps per fit")
    ap.add_argument("--repeats", type=int, default=7, help="interleaved repeats; the median is reported")
    ap.add_argument("--batch", type=int, default=1024, help="training rows (one full batch)")
    ap.add_argument("--width", type=int, default=40, help="hidden width of the 2-w x6-1 tanh surrogate")
    ap.add_argument("--members", type=int, default=0, help="also time the ensemble engine with this many members")
    ap.add_argument("--lenet", action="store_true", help="also time LeNet-300-100 (cross-entropy)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if min(args.steps, args.repeats, args.batch, args.width) < 1 or args.members < 0:
        raise SystemExit("--steps, --repeats, --batch and --width must be >= 1, --members >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
    device, _ = setup(args)

    g = torch.Generator().manual_seed(args.seed)
    X = (torch.rand(args.batch, 2, generator=g) * 2 - 1).to(device)
    Y = torch.sin(3 * X[:, :1]) * torch.exp(-X[:, 1:])

    def surrogate(seed: int):
        model = sciprune.MLP(2, [args.width] * 6, 1, "tanh", seed=seed).to(device)
        sciprune.prune(model, "magnitude", 0.5)
        return model

    title = f"2-{args.width}x6-1 tanh surrogate (MSE), batch {args.batch}, 50% pruned"
    bench(title, [surrogate(args.seed)], (X, Y), steps=args.steps, repeats=args.repeats, device=device)
    if args.members:
        bench(f"{title}, ensemble of {args.members}", [surrogate(args.seed + m) for m in range(args.members)],
              (X, Y), steps=args.steps, repeats=args.repeats, device=device)
    if args.lenet:
        lenet = sciprune.lenet_300_100(seed=args.seed).to(device)
        sciprune.prune(lenet, "magnitude", 0.5)
        Xl = torch.randn(args.batch, 784, generator=g).to(device)
        Yl = torch.randint(0, 10, (args.batch,), generator=g).to(device)
        bench(f"LeNet-300-100 (cross-entropy), batch {args.batch}, 50% pruned", [lenet], (Xl, Yl),
              steps=args.steps, repeats=args.repeats, device=device)


if __name__ == "__main__":
    main()
