"""Cost of holding masks during training: one optimiser step, dense vs masked.

One training step (forward, loss, backward, Adam step) is timed for three versions of the same
network, all in the same process with interleaved repeats:

(a) ``dense``: no masks, plain ``optimizer.step()``;
(b) ``sciprune``: ``sciprune.prune(model, "magnitude", 0.9)`` then :class:`sciprune.MaskedStep`
    (gradients masked before the step, weights after it: two ``_foreach_mul_`` calls per step);
(c) ``torch.prune``: ``torch.nn.utils.prune.l1_unstructured(amount=0.9)`` on each Linear, whose
    forward pre-hook recomputes ``weight = weight_orig * weight_mask`` at every forward pass.

Cases: LeNet-300-100 (784-300-100-10, ReLU, cross-entropy) at ``--batch`` (4096), and the
PDEBench-style 2-40x6-1 tanh surrogate (MSE) at ``--small-batch`` (1024). Each repeat times
``--steps`` steps of every version in turn (the order rotates between repeats); the table gives the
median over repeats of ms/step, the median of the per-repeat ratios to dense, and the GFLOP/s
achieved counting 2*B*sum(in*out) for the forward pass and twice that for the backward pass
(the dense count for all three versions: none of them skips the zeros). A last row times the two
in-place products that ``MaskedStep`` adds (``mask_grads`` + ``enforce``) on their own, as a fraction
of the dense step: an estimate of (b) - (a) that does not suffer from the noise of two long timings.

Run:  python benchmarks/bench_mask_step.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from _common import sync
from torch import nn
from torch.nn.utils import prune as tprune

import sciprune
from sciprune.masks import enforce, mask_grads
from sciprune.models import linear_chain

VARIANTS = ("dense", "sciprune", "torch.prune")


def step_flops(model: nn.Module, batch: int) -> float:
    """FLOPs of one training step: forward 2*B*sum(in*out), backward about twice that."""
    fwd = 2.0 * batch * sum(lin.in_features * lin.out_features for lin in linear_chain(model))
    return 3.0 * fwd


def make_variants(base: nn.Module, ratio: float, lr: float) -> dict[str, tuple[nn.Module, torch.optim.Optimizer, object]]:
    """name -> (model, optimiser, step): copies of ``base``; ``step()`` runs the optimiser step."""
    out = {}

    dense = copy.deepcopy(base)
    opt_d = torch.optim.Adam(dense.parameters(), lr=lr)
    out["dense"] = (dense, opt_d, opt_d.step)

    ours = copy.deepcopy(base)
    sciprune.prune(ours, "magnitude", ratio)
    opt_s = torch.optim.Adam(ours.parameters(), lr=lr)
    out["sciprune"] = (ours, opt_s, sciprune.MaskedStep(opt_s, ours))

    theirs = copy.deepcopy(base)
    for lin in linear_chain(theirs):
        tprune.l1_unstructured(lin, "weight", amount=ratio)
    opt_t = torch.optim.Adam(theirs.parameters(), lr=lr)
    out["torch.prune"] = (theirs, opt_t, opt_t.step)
    return out


def run_steps(model, opt, step, X, Y, loss_fn, n: int) -> None:
    for _ in range(n):
        opt.zero_grad(set_to_none=True)
        loss_fn(model(X), Y).backward()
        step()


def check_masks_held(variants) -> dict[str, float]:
    """Fraction of zero weights each version computes with, after the timed steps."""
    out = {}
    for name, (model, _, _) in variants.items():
        ws = [lin.weight.detach() for lin in linear_chain(model)]  # torch.prune: the recomputed weight
        out[name] = sum(int((w == 0).sum()) for w in ws) / sum(w.numel() for w in ws)
    return out


def bench_case(title, base, X, Y, loss_fn, *, steps, repeats, warmup, device, ratio=0.9, lr=1e-4):
    variants = make_variants(base, ratio, lr)
    for name, (model, opt, step) in variants.items():
        run_steps(model, opt, step, X, Y, loss_fn, warmup)
    sync(device)
    times = {name: [] for name in variants}
    mask_ops = []
    for r in range(repeats):
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for name in order:
            model, opt, step = variants[name]
            sync(device)
            t0 = time.perf_counter()
            run_steps(model, opt, step, X, Y, loss_fn, steps)
            sync(device)
            times[name].append((time.perf_counter() - t0) / steps * 1e3)
        # the two in-place products MaskedStep adds to a step, timed alone (an estimate of (b) - (a))
        pairs = variants["sciprune"][2].pairs
        sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            mask_grads(pairs)
            enforce(pairs)
        sync(device)
        mask_ops.append((time.perf_counter() - t0) / steps * 1e3)
    flops = step_flops(base, X.shape[0])
    zeros = check_masks_held(variants)
    print(f"\n{title}: batch {X.shape[0]}, {flops / 1e9:.4g} GFLOP/step, {steps} steps x {repeats} repeats "
          f"(+{warmup} warm-up), target sparsity {ratio:.0%}")
    print(f"{'version':<12} {'ms/step':>9} {'min':>8} {'max':>8} {'ratio':>7} {'GFLOP/s':>8} {'zeros':>6}")
    for name in VARIANTS:
        t = times[name]
        med = statistics.median(t)
        ratio_to_dense = statistics.median(a / b for a, b in zip(t, times["dense"]))
        print(f"{name:<12} {med:9.3f} {min(t):8.3f} {max(t):8.3f} {ratio_to_dense:7.3f} "
              f"{flops / med / 1e6:8.2f} {zeros[name]:6.1%}")
    t = mask_ops
    share = statistics.median(a / b for a, b in zip(t, times["dense"]))
    print(f"{'(mask ops)':<12} {statistics.median(t):9.3f} {min(t):8.3f} {max(t):8.3f} {share:7.3f}"
          f"   <- mask_grads + enforce alone, as a fraction of the dense step")
    return times


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--batch", type=int, default=4096, help="LeNet-300-100 batch size")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per repeat (LeNet)")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats; the median is reported")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per version before timing")
    ap.add_argument("--small-batch", type=int, default=1024, help="2-40x6-1 surrogate batch size")
    ap.add_argument("--small-steps", type=int, default=200, help="timed steps per repeat (surrogate)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"device: {args.device} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"sciprune {sciprune.__version__}")

    g = torch.Generator().manual_seed(args.seed)
    lenet = sciprune.lenet_300_100(seed=args.seed).to(device)
    X = torch.randn(args.batch, 784, generator=g).to(device)
    Y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    bench_case("LeNet-300-100 (cross-entropy)", lenet, X, Y, F.cross_entropy,
               steps=args.steps, repeats=args.repeats, warmup=args.warmup, device=device)

    surrogate = sciprune.MLP(2, [40] * 6, 1, "tanh", seed=args.seed).to(device)
    Xs = (torch.rand(args.small_batch, 2, generator=g) * 2 - 1).to(device)
    Ys = torch.sin(3 * Xs[:, :1]) * torch.exp(-Xs[:, 1:])
    bench_case("2-40x6-1 tanh surrogate (MSE)", surrogate, Xs, Ys, F.mse_loss,
               steps=args.small_steps, repeats=args.repeats, warmup=args.warmup * 10, device=device)


if __name__ == "__main__":
    main()
