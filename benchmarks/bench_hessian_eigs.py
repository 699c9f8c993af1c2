"""Top Hessian eigenvalues: Lanczos (scipy eigsh) against deflated power iteration (PyHessian's way).

Both solvers run on the same :class:`sciprune.curvature.CurvatureOperator` (exact Hessian-vector
products by ``torch.func`` forward-over-reverse, one pass over the data each) at the same relative
tolerance (``--tol``, 1e-3): ``sciprune.curvature.top_eigenpairs`` (implicitly restarted Lanczos,
ARPACK stops when ``||Hu - lambda u|| <= tol |lambda|`` for every pair) and
``sciprune.curvature.power_iteration_eigs`` (for each eigenvalue, power iteration on the Hotelling-
deflated Hessian until the Rayleigh quotient changes by less than ``tol`` relatively), the method of
PyHessian and pytorch-hessian-eigenthings, the peer. The table gives, for the top-k (``--k``, 5) and
the top-1 alone, the Hessian-vector products each needs, the wall time, the ratios to the peer in the
same run, and the largest relative error of the eigenvalues against a tight Lanczos reference
(``tol=1e-8``, computed once; its cost is not in the table) and the largest residual
``||Hu - lambda u|| / |lambda|``. Power iteration finds the eigenvalues of largest magnitude, Lanczos
(``which="LA"``) the largest algebraic ones; both are compared with the largest algebraic. Timings are single runs: the product
count is the machine-independent figure, wall time follows it at a fixed cost per product.

Cases:
(a) the PDEBench-style 2-40x6-1 tanh surrogate, trained for ``--train-steps`` full-batch Adam steps
    (lr 1e-3) on ``--n-coords`` random points of [0,1]^2 with the smooth target
    ``sin(pi x) exp(-t)`` so the Hessian is not that of the initialisation; MSE;
(b) a 64-32-10 ReLU classifier at initialisation on ``--n-class`` random Gaussian inputs with random
    labels; cross-entropy.

Run:  python benchmarks/bench_hessian_eigs.py --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import setup, sync

import sciprune
from sciprune import curvature as cv


def train(model, X, Y, steps: int) -> float:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(X), Y)
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        return float(F.mse_loss(model(X), Y))


def run_case(title, model, X, Y, *, loss, k, tol, batch, seed, device):
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\n{title}: {X.shape[0]} samples, {n_params} parameters, batch {batch or X.shape[0]}, tol {tol:g}")
    common = {"loss": loss, "batch_size": batch, "seed": seed}
    sync(device)
    ref = cv.top_eigenpairs(model, (X, Y), k=k, tol=1e-8, **common)
    print(f"reference (Lanczos, tol 1e-8, {ref.n_products} products, {ref.wall_s:.1f} s): "
          + " ".join(f"{v:.6g}" for v in ref.values))
    rows = []
    for kk in (k, 1):
        res = {}
        for label, fn in (("lanczos (eigsh)", cv.top_eigenpairs), ("power iteration", cv.power_iteration_eigs)):
            sync(device)
            r = fn(model, (X, Y), k=kk, tol=tol, **common)
            sync(device)
            err = float(np.max(np.abs(r.values - ref.values[:kk]) / np.abs(ref.values[:kk])))
            res[label] = (r, err)
        peer = res["power iteration"][0]
        for label, (r, err) in res.items():
            rows.append((kk, label, r.n_products, r.wall_s, r.wall_s / r.n_products, r.n_products / peer.n_products,
                         r.wall_s / peer.wall_s, err, float(np.max(r.residuals)), all(r.converged), r.values))
    print(f"{'k':>2s} {'method':18s} {'HVPs':>6s} {'wall s':>8s} {'ms/HVP':>7s} {'HVPs/peer':>9s} {'wall/peer':>9s} "
          f"{'max rel err':>11s} {'max resid':>9s} {'conv':>5s}  values")
    for kk, label, n, w, per, rn, rw, err, resid, ok, vals in rows:
        print(f"{kk:2d} {label:18s} {n:6d} {w:8.2f} {per * 1e3:7.1f} {rn:9.2f} {rw:9.2f} {err:11.2e} {resid:9.1e} {ok!s:>5s}  "
              + " ".join(f"{v:.5g}" for v in vals))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0, help="start vectors of both solvers")
    ap.add_argument("--batch", type=int, default=None, help="rows per pass chunk (default: all at once)")
    ap.add_argument("--n-coords", type=int, default=20000)
    ap.add_argument("--train-steps", type=int, default=200)
    ap.add_argument("--n-class", type=int, default=10000)
    ap.add_argument("--only", choices=["a", "b"], default=None)
    args = ap.parse_args()
    device, dtype = setup(args)
    g = torch.Generator().manual_seed(0)
    if args.only in (None, "a"):
        model = sciprune.MLP(2, [40] * 6, 1, "tanh", seed=0).to(device, dtype)
        X = torch.rand(args.n_coords, 2, generator=g, dtype=torch.float64)
        Y = (torch.sin(math.pi * X[:, :1]) * torch.exp(-X[:, 1:]))
        X, Y = X.to(device, dtype), Y.to(device, dtype)
        t0 = time.perf_counter()
        mse = train(model, X, Y, args.train_steps)
        print(f"(a) trained {args.train_steps} Adam steps in {time.perf_counter() - t0:.1f} s, MSE {mse:.3e}")
        run_case("(a) 2-40x6-1 tanh surrogate (MSE)", model, X, Y, loss="mse", k=args.k, tol=args.tol,
                 batch=args.batch, seed=args.seed, device=device)
    if args.only in (None, "b"):
        model = sciprune.MLP(64, [32], 10, "relu", seed=0).to(device, dtype)
        X = torch.randn(args.n_class, 64, generator=g).to(device, dtype)
        Y = torch.randint(0, 10, (args.n_class,), generator=g).to(device)
        run_case("(b) 64-32-10 ReLU classifier at init (cross-entropy)", model, X, Y, loss="cross_entropy",
                 k=args.k, tol=args.tol, batch=args.batch, seed=args.seed, device=device)


if __name__ == "__main__":
    main()
