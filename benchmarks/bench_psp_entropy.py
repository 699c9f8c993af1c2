"""Cost of PSP-entropy (first, and first + second order) against one plain forward pass.

``sciprune.diagnostics.psp_entropy`` on LeNet-300-100 (784-300-100-10, ReLU) with random inputs and
10 random classes is timed against ``model(X)`` over the same data in the same chunks of ``B`` rows
under ``torch.no_grad()``, interleaved in one process after a warm-up; the table gives the median
over repeats of each time and the median of the per-repeat ratios to the forward pass. "checked
data" rows pass a pre-built ``Batches`` (a tuple is checked for NaN/inf at every call).

The peer for order 2 is a straightforward per-pair loop (states from one forward pass, then for
every pair i < j one ``bincount`` of the joint state and class, vectorised over samples only), timed
on a subset of ``--peer-n`` samples beside the library on the same subset; their results are
compared (max abs difference of the pair entropies).

FLOPs (matrix products only): forward 2 N sum(in*out); order 2 adds 2 N sum(w^2) over the hidden
layers (S_c^T S_c per class, full matrices); order 1 adds 2 N K sum(w) for the per-class counts.

Run:  python benchmarks/bench_psp_entropy.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from _common import setup, timed

import sciprune
from sciprune.batches import as_batches
from sciprune.diagnostics import psp_entropy, psp_norms
from sciprune.models import linear_chain


@torch.no_grad()
def forward(model, X, batch: int) -> None:
    for s in range(0, X.shape[0], batch):
        model(X[s : s + batch])


@torch.no_grad()
def pair_loop(model, X, Y, K: int) -> list[torch.Tensor]:
    """Peer: second-order PSP-entropy with a Python loop over pairs (vectorised over samples)."""
    lins = linear_chain(model)
    states, a = [], X
    for lin in lins[:-1]:
        z = lin(a)
        states.append((z > 0).long())
        a = torch.relu(z)
    n_c = torch.bincount(Y, minlength=K).to(torch.float64)
    out = []
    for S in states:
        w = S.shape[1]
        H = torch.zeros(w, w, dtype=torch.float64)
        for i in range(w):
            for j in range(i + 1, w):
                counts = torch.bincount(4 * Y + 2 * S[:, i] + S[:, j], minlength=4 * K).view(K, 4).to(torch.float64)
                p = counts / n_c.clamp_min(1)[:, None]
                H[i, j] = H[j, i] = -float(torch.special.xlogy(p, p).sum()) / math.log(2.0)
        out.append(H)
    return out


def flops(model, n: int, K: int, order: int) -> float:
    shapes = [(lin.in_features, lin.out_features) for lin in linear_chain(model)]
    f = 2.0 * n * sum(i * o for i, o in shapes)
    hidden = [o for _, o in shapes[:-1]]
    f += 2.0 * n * K * sum(hidden)
    if order >= 2:
        f += 2.0 * n * sum(w * w for w in hidden)
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--n", type=int, default=60000, help="samples")
    ap.add_argument("--batch", type=int, default=16384, help="rows per chunk, the same for every version")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--peer-n", type=int, default=2000, help="samples for the per-pair loop peer; 0 skips")
    args = ap.parse_args()
    device, dtype = setup(args)
    g = torch.Generator().manual_seed(0)
    K = 10
    model = sciprune.lenet_300_100(784, K, seed=0).to(device, dtype)
    X = torch.rand(args.n, 784, generator=g).to(device, dtype)
    Y = torch.randint(0, K, (args.n,), generator=g).to(device)
    checked = as_batches((X, Y), batch_size=args.batch)
    B = args.batch
    work = {
        "forward": (lambda: forward(model, X, B), flops(model, args.n, 0, 1)),
        "psp_norms": (lambda: psp_norms(model, (X, Y), batch_size=B), flops(model, args.n, 0, 1)),
        "psp_entropy order 1": (lambda: psp_entropy(model, (X, Y), order=(1,), batch_size=B), flops(model, args.n, K, 1)),
        "psp_entropy order 1+2": (lambda: psp_entropy(model, (X, Y), batch_size=B), flops(model, args.n, K, 2)),
        "order 1, checked data": (lambda: psp_entropy(model, checked, order=(1,)), flops(model, args.n, K, 1)),
        "order 1+2, checked data": (lambda: psp_entropy(model, checked), flops(model, args.n, K, 2)),
    }
    print(f"\nLeNet-300-100 ReLU: {args.n} samples, {K} classes, batch {B}, {args.repeats} repeats (+{args.warmup} warm-up)")
    names = list(work)
    times = {k: [] for k in names}
    ratios = {k: [] for k in names}
    for r in range(args.warmup + args.repeats):
        order = names[r % len(names):] + names[: r % len(names)]
        t = {k: timed(work[k][0], device) for k in order}
        if r >= args.warmup:
            for k in names:
                times[k].append(t[k])
                ratios[k].append(t[k] / t["forward"])
    print(f"{'version':26s} {'s/pass':>8s} {'min':>8s} {'max':>8s} {'ratio':>6s} {'GFLOP':>7s} {'GFLOP/s':>8s}")
    for k in names:
        med = statistics.median(times[k])
        print(f"{k:26s} {med:8.4f} {min(times[k]):8.4f} {max(times[k]):8.4f} {statistics.median(ratios[k]):6.2f} "
              f"{work[k][1] / 1e9:7.2f} {work[k][1] / med / 1e9:8.2f}")
    if args.peer_n:
        n = min(args.peer_n, args.n)
        Xs, Ys = X[:n], Y[:n]
        lib_t = min(timed(lambda: psp_entropy(model, (Xs, Ys)), device) for _ in range(3))
        ds = psp_entropy(model, (Xs, Ys))
        fwd_t = min(timed(lambda: forward(model, Xs, B), device) for _ in range(3))
        t0 = time.perf_counter()
        ref = pair_loop(model.cpu(), Xs.cpu(), Ys.cpu(), K)
        peer_t = time.perf_counter() - t0
        model.to(device)
        diff = max(float((torch.as_tensor(ds[f"pair_entropy_{l}"].values) - H).fill_diagonal_(0).abs().max())
                   for l, H in zip(ds["layer"].values, ref))
        print(f"\norder 2 on a {n}-sample subset (per-pair loop peer, {sum(h.shape[0] * (h.shape[0] - 1) // 2 for h in ref)} pairs):")
        print(f"{'forward':26s} {fwd_t:8.4f}")
        print(f"{'psp_entropy order 1+2':26s} {lib_t:8.4f}   ratio to forward {lib_t / fwd_t:6.2f}")
        print(f"{'per-pair loop (peer)':26s} {peer_t:8.2f}   {peer_t / lib_t:8.0f}x the library; "
              f"max |H2 difference| = {diff:.2e}")


if __name__ == "__main__":
    main()
