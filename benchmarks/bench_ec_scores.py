"""Cost of elimination-compensation scores against one forward-and-backward pass of the loss.

``sciprune.scores(model, "ec", (X, Y), batch_size=B)`` is timed against a plain training-style pass
over the same data in the same chunks of ``B`` rows (forward, summed loss, ``backward()`` into the
parameters' ``.grad``), interleaved in one process after a warm-up; the table gives the median over
repeats of each time and the median of the per-repeat ratios to the baseline. ``ec-exact`` (one
forward pass per weight) is timed once on a subset of the data and its full-data time extrapolated
linearly in the number of samples (it is exactly linear in them), labelled as such.

Cases:
(a) the PDEBench-style 2-40x6-1 tanh surrogate on 103 424 random points (1024 x 101 grid size),
    one output, MSE: exact EC (one backward pass);
(b) 784-300-100-10 ReLU (LeNet-300-100) on 60 000 random samples with 10 outputs, cross-entropy:
    exact EC (10 backward passes, batched as one stack of cotangents) and random probes.
Targets: EC within 1.5x of forward+backward for one output, within 3x for ten.

FLOPs are those each computation performs in matrix products (elementwise work not counted):
forward 2 B sum(in*out); baseline backward 2 B sum(in*out) for weight gradients plus the input
gradients of every layer but the first; EC backward 2 B P in*out for every layer whose cotangents
vary over the batch (P = outputs or probes), plus 2 B in*out for each of S1 = G^T a and
S2 = G^T a^2 per layer (the output layer's, constant G when exact, is an outer product);
``ec-exact``: per weight, the rank-one update of the next layer and a forward pass through the rest.

Run:  python benchmarks/bench_ec_scores.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _common import scoring_case, setup, timed

import sciprune
from sciprune.batches import as_batches
from sciprune.models import linear_chain


def fwd_bwd(model, X, Y, batch: int, loss: str) -> None:
    """One pass of forward + loss + backward over the data in chunks of ``batch`` rows."""
    model.zero_grad(set_to_none=True)
    for s in range(0, X.shape[0], batch):
        y = model(X[s : s + batch])
        if loss == "mse":
            F.mse_loss(y, Y[s : s + batch], reduction="sum").backward()
        else:
            F.cross_entropy(y, Y[s : s + batch], reduction="sum").backward()


def flops(model, n: int, *, which: str, outputs: int = 1, probes: int | None = None) -> float:
    shapes = [(lin.in_features, lin.out_features) for lin in linear_chain(model)]
    fwd = 2.0 * n * sum(i * o for i, o in shapes)
    if which == "fwd+bwd":
        return fwd + fwd + 2.0 * n * sum(i * o for i, o in shapes[1:])
    P = probes or outputs
    # exact cotangents are constant over the batch at the output layer: its g @ W is (K, 1, in)
    back = sum(2.0 * n * P * i * o for i, o in (shapes[1:-1] if probes is None else shapes[1:]))
    stats_layers = shapes[:-1] if probes is None else shapes
    return fwd + back + sum(2 * 2.0 * n * i * o for i, o in stats_layers)


def exact_flops(model, n: int) -> float:
    """FLOPs of ``ec-exact``: for every weight, the next layer's rank-one update and the rest."""
    shapes = [(lin.in_features, lin.out_features) for lin in linear_chain(model)]
    total = 0.0
    for l, (i, o) in enumerate(shapes):
        if l + 1 < len(shapes):
            rest = 2.0 * shapes[l + 1][1] + sum(2.0 * a * b for a, b in shapes[l + 2 :])
            total += i * o * n * rest
    return total


def run_case(title, model, X, Y, *, loss, batch, variants, repeats, warmup, exact_n, device):
    n, K = X.shape[0], model(X[:2]).shape[1]
    print(f"\n{title}: {n} samples, {K} output(s), batch {batch}, {repeats} repeats (+{warmup} warm-up), "
          f"{sum(p.numel() for n_, p in model.named_parameters() if n_.endswith('weight'))} weights")
    work = {"fwd+bwd": (lambda: fwd_bwd(model, X, Y, batch, loss), flops(model, n, which="fwd+bwd"))}
    for label, opts in variants:
        fn = (lambda o=opts: sciprune.scores(model, "ec", (X, Y), batch_size=batch, **o))
        work[label] = (fn, flops(model, n, which="ec", outputs=K, probes=opts.get("probes")))
    # the same as the first variant with the data validated beforehand (as_batches checks every
    # value for NaN/inf at each call with a tuple): the cost of the scores alone
    checked = as_batches((X, Y), batch_size=batch)
    label, opts = variants[0]
    work[label.replace("ec (", "ec, checked data (")] = (
        lambda o=opts: sciprune.scores(model, "ec", checked, **o), flops(model, n, which="ec", outputs=K, probes=opts.get("probes")))
    times = {k: [] for k in work}
    ratios = {k: [] for k in work}
    names = list(work)
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        t = {k: timed(work[k][0], device) for k in order}
        if r >= warmup:
            for k in names:
                times[k].append(t[k])
                ratios[k].append(t[k] / t["fwd+bwd"])
    print(f"{'version':30s} {'s/pass':>8s} {'min':>8s} {'max':>8s} {'ratio':>6s} {'GFLOP':>8s} {'GFLOP/s':>8s}")
    for k in names:
        med = statistics.median(times[k])
        print(f"{k:30s} {med:8.4f} {min(times[k]):8.4f} {max(times[k]):8.4f} {statistics.median(ratios[k]):6.2f} "
              f"{work[k][1] / 1e9:8.2f} {work[k][1] / med / 1e9:8.2f}")
    if exact_n:
        Xs, Ys = X[:exact_n], Y[:exact_n]
        nw = sum(p.numel() for n_, p in model.named_parameters() if n_.endswith("weight"))
        sciprune.scores(model, "ec-exact", (Xs[:64], Ys[:64]), max_weights=nw)  # warm-up
        t = timed(lambda: sciprune.scores(model, "ec-exact", (Xs, Ys), max_weights=nw), device)
        fl = exact_flops(model, exact_n)
        full = t * n / exact_n
        base = statistics.median(times["fwd+bwd"])
        print(f"{'ec-exact (subset)':30s} {t:8.4f} {'':8s} {'':8s} {t / base:6.1f} {fl / 1e9:8.2f} {fl / t / 1e9:8.2f}"
              f"   <- measured on {exact_n} samples, float64")
        print(f"{'ec-exact (extrapolated)':30s} {full:8.1f} {'':8s} {'':8s} {full / base:6.0f} {fl * n / exact_n / 1e9:8.0f}"
              f"   <- EXTRAPOLATED to {n} samples (x{n / exact_n:.1f}); {t / (nw * exact_n) * 1e9:.2f} ns per weight and sample")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--batch", type=int, default=16384, help="rows per chunk, the same for every version")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--exact-pde", type=int, default=2048, help="samples for ec-exact on (a); 0 skips")
    ap.add_argument("--exact-lenet", type=int, default=64, help="samples for ec-exact on (b); 0 skips")
    ap.add_argument("--probes", type=int, nargs="*", default=[1, 4], help="probe counts for (b)")
    ap.add_argument("--only", choices=["a", "b"], default=None)
    args = ap.parse_args()
    device, dtype = setup(args)
    g = torch.Generator().manual_seed(0)
    if args.only in (None, "a"):
        title, model, X, Y, loss = scoring_case("a", g, device, dtype)
        run_case(title, model, X, Y, loss=loss, batch=args.batch, variants=[("ec (exact, K=1)", {})],
                 repeats=args.repeats, warmup=args.warmup, exact_n=args.exact_pde, device=device)
    if args.only in (None, "b"):
        title, model, X, Y, loss = scoring_case("b", g, device, dtype)
        variants = [("ec (exact, K=10)", {})] + [(f"ec (probes={p})", {"probes": p}) for p in args.probes]
        run_case(title, model, X, Y, loss=loss, batch=args.batch, variants=variants, repeats=args.repeats,
                 warmup=args.warmup, exact_n=args.exact_lenet, device=device)


if __name__ == "__main__":
    main()
