"""Cost of training hooks in :func:`sciprune.fit`: one training step, four ways, same run.

(a) ``no hooks``: ``fit(..., hooks=None)``, today's path (dense model, no masks);
(b) ``empty list``: ``fit(..., hooks=[])``, which must cost nothing measurable (issue 10: <= 2%);
(c) ``prune/100``: a hook that calls ``sciprune.prune(model, "magnitude", r)`` every ``--every``
    (100) optimiser steps with r rising linearly to 0.9 over the run, the cost of a gradual mask
    update, including the masked steps that follow;
(d) ``cubic/100``: the library's own hook ``sciprune.GradualPruning("magnitude", 0.9,
    schedule={"kind": "cubic", "start_step": 0, "n_updates": n, "every": dt})`` with dt = ``--every``
    and n = ``--steps`` // dt, so the masks follow Zhu & Gupta's s_t = s_f (1 - (1 - t/(n dt))^3)
    (s_i = 0) at steps 0, dt, ..., n dt and reach 0.9 at the last one (issue 10: <= 5% over (a)).

Each repeat runs one full-batch ``fit`` of ``--steps`` epochs (= optimiser steps) of every version
in turn, from the same initial weights (the order rotates between repeats); the table gives the
median over repeats of ms/step and the median of the per-repeat ratios to (a). Cases: the
PDEBench-style 2-40x6-1 tanh surrogate (MSE, batch 1024) and, with ``--lenet``, LeNet-300-100
(cross-entropy, batch ``--batch``).

Run:  python benchmarks/bench_fit_hooks.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import copy

import torch
from _common import interleaved_ms_per_step, print_ratio_table, setup
from torch import nn

import sciprune

VARIANTS = ("no hooks", "empty list", "prune/100", "cubic/100")


class RisingPrune:
    """Every ``every`` steps prune by magnitude to a ratio rising linearly to ``final`` at ``total``."""

    def __init__(self, every: int, total: int, final: float = 0.9) -> None:
        self.every, self.total, self.final = every, total, final

    def after_step(self, state) -> None:
        if state.step % self.every == 0:
            sciprune.prune(state.model, "magnitude", self.final * state.step / self.total)


def cubic_hook(every: int, steps: int, final: float = 0.9) -> sciprune.GradualPruning:
    """Zhu & Gupta's cubic schedule to ``final``: masks updated at steps 0, every, ..., n every (n = steps // every)."""
    schedule = {"kind": "cubic", "start_step": 0, "n_updates": steps // every, "every": every}
    return sciprune.GradualPruning("magnitude", final, schedule=schedule)


def bench_case(title: str, base: nn.Module, X, Y, *, steps: int, repeats: int, every: int, device) -> None:
    cfg = sciprune.TrainConfig(lr=1e-4, epochs=steps)

    def run(name: str) -> list | None:
        model = copy.deepcopy(base)
        hooks = {"no hooks": None, "empty list": [], "prune/100": [RisingPrune(every, steps)],
                 "cubic/100": [cubic_hook(every, steps)]}[name]
        sciprune.fit(model, (X, Y), cfg, hooks=hooks)
        return hooks

    for name in VARIANTS:  # warm-up; the cubic run is checked to reach its target on schedule
        hooks = run(name)
    cubic = hooks[0]
    achieved = [round(rep.achieved, 4) for rep in cubic.reports]
    if abs(cubic.reports[-1].achieved - 0.9) > 1.0 / cubic.reports[-1].total:
        raise SystemExit(f"cubic/100 ended at sparsity {achieved[-1]}, not 0.9")
    times = interleaved_ms_per_step(run, VARIANTS, repeats, steps, device)
    print(f"\n{title}: batch {X.shape[0]}, {steps} full-batch steps per fit x {repeats} repeats, "
          f"mask update every {every} steps")
    print(f"cubic/100: masks updated after steps {cubic.steps}, sparsity {achieved}")
    print_ratio_table(times, "no hooks")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--steps", type=int, default=400, help="optimiser steps per fit")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats; the median is reported")
    ap.add_argument("--every", type=int, default=100, help="steps between mask updates in (c) and (d)")
    ap.add_argument("--batch", type=int, default=1024, help="LeNet-300-100 batch size")
    ap.add_argument("--lenet", action="store_true", help="also time LeNet-300-100 (slower)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.every < 1 or args.steps < args.every:
        raise SystemExit(f"--every must be >= 1 and <= --steps, got --every {args.every} --steps {args.steps}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
    device, _ = setup(args)

    g = torch.Generator().manual_seed(args.seed)
    surrogate = sciprune.MLP(2, [40] * 6, 1, "tanh", seed=args.seed).to(device)
    Xs = (torch.rand(1024, 2, generator=g) * 2 - 1).to(device)
    Ys = torch.sin(3 * Xs[:, :1]) * torch.exp(-Xs[:, 1:])
    bench_case("2-40x6-1 tanh surrogate (MSE)", surrogate, Xs, Ys, steps=args.steps, repeats=args.repeats,
               every=args.every, device=device)

    if not args.lenet:
        return
    lenet = sciprune.lenet_300_100(seed=args.seed).to(device)
    X = torch.randn(args.batch, 784, generator=g).to(device)
    Y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    bench_case("LeNet-300-100 (cross-entropy)", lenet, X, Y, steps=args.steps, repeats=args.repeats,
               every=args.every, device=device)


if __name__ == "__main__":
    main()
