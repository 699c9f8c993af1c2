"""Many small networks at once: model-epochs per second, per-model loops vs the ensemble engine.

The 2-64x4-1 tanh coordinate network (``sciprune.MLP(2, [64] * 4, 1, "tanh")``, MSE) is trained with
Adam at batch ``--batch`` (1024) on ``--points`` coordinate points (default 103,424 on CUDA, 20,000 on
CPU), all versions in the same process:

(1) ``plain loop``: the loop users write: a ``DataLoader`` over a ``TensorDataset`` on the CPU with
    ``shuffle=True``, each batch moved to the device, ``loss.backward(); optimizer.step()``;
(2) ``sciprune.fit``: the resident per-model loop (data on the device, batches are index slices);
(3) ``ensemble M=..``: :func:`sciprune.ensemble.fit_ensemble` with M members (own weights, own noisy
    targets, own shuffling seed) in one loop, for each M in ``--members`` and each forward mode in
    ``--forward`` (``bmm``: one ``baddbmm`` per layer; ``vmap``: ``functional_call`` under ``vmap``).

Each version runs one untimed warm-up epoch, then ``--epochs`` timed epochs, ``--repeats`` times
(median reported). Columns: model-epochs/s (members x epochs / s), ratios to (1) and (2), and the
achieved GFLOP/s counting 6*B*sum(in*out) per step and member (forward 2*B*sum(in*out), backward
twice that; biases, activations, loss and optimiser not counted). On CUDA, ``--peak-tflops`` (the
card's dense float32 peak) adds the fraction of peak.

Run:  python benchmarks/bench_ensemble.py --device cpu --threads 2 --members 8 32
      python benchmarks/bench_ensemble.py --device cuda --members 32 256 --peak-tflops 67
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _common import timed
from torch.utils.data import DataLoader, TensorDataset

import sciprune
from sciprune.ensemble import fit_ensemble
from sciprune.models import linear_chain
from sciprune.training import TrainConfig

try:
    from bench_mask_step import cpu_model
except ImportError:  # run from elsewhere
    import platform

    def cpu_model() -> str:
        return platform.processor() or "unknown CPU"


def make_model(seed: int, device, dtype) -> torch.nn.Module:
    return sciprune.MLP(2, [64] * 4, 1, "tanh", seed=seed).to(device=device, dtype=dtype)


def make_data(n: int, members: int, seed: int, device, dtype):
    """Shared coordinates in [-1, 1]^2; per-member targets u(x, t) + 1% Gaussian noise."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g) * 2 - 1
    u = torch.sin(torch.pi * X[:, :1]) * torch.exp(-X[:, 1:])
    Ys = [u + 0.01 * torch.randn(n, 1, generator=g) for _ in range(members)]
    return X.to(device=device, dtype=dtype), [Y.to(device=device, dtype=dtype) for Y in Ys]


def plain_loop(model, X_cpu, Y_cpu, device, batch, epochs, lr, seed) -> None:
    loader = DataLoader(TensorDataset(X_cpu, Y_cpu), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for xb, yb in loader:
            xb, yb = xb.to(device), yb.to(device)
            opt.zero_grad(set_to_none=True)
            F.mse_loss(model(xb), yb).backward()
            opt.step()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--points", type=int, default=None, help="training points (default 103424 on CUDA, 20000 on CPU)")
    ap.add_argument("--members", type=int, nargs="+", default=None, help="ensemble sizes (default 8 32 CPU; 32 256 CUDA)")
    ap.add_argument("--forward", nargs="+", default=["bmm", "vmap"], choices=["bmm", "vmap"])
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per repeat")
    ap.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense float32 peak of the GPU, for the %% column")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    n = args.points or (103_424 if device.type == "cuda" else 20_000)
    members = args.members or ([32, 256] if device.type == "cuda" else [8, 32])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"device: {args.device} ({name}); torch {torch.__version__}; threads {torch.get_num_threads()}; "
          f"sciprune {sciprune.__version__}; {args.dtype}")

    X, Ys = make_data(n, max(members), args.seed, device, dtype)
    X_cpu, Y_cpu = X.cpu(), Ys[0].cpu()
    flops_epoch = 6.0 * n * sum(l.in_features * l.out_features for l in linear_chain(make_model(0, "cpu", dtype)))
    cfg = TrainConfig(optimizer="adam", lr=args.lr, epochs=args.epochs, batch_size=args.batch)
    warm = TrainConfig(optimizer="adam", lr=args.lr, epochs=1, batch_size=args.batch)

    runs: dict[str, tuple[int, callable, callable]] = {}  # name -> (model count, warm-up, timed run)
    m1 = make_model(0, device, dtype)
    runs["(1) plain loop"] = (1, lambda: plain_loop(m1, X_cpu, Y_cpu, device, args.batch, 1, args.lr, 0),
                              lambda: plain_loop(m1, X_cpu, Y_cpu, device, args.batch, args.epochs, args.lr, 0))
    m2 = make_model(0, device, dtype)
    runs["(2) sciprune.fit"] = (1, lambda: sciprune.fit(m2, (X, Ys[0]), warm), lambda: sciprune.fit(m2, (X, Ys[0]), cfg))
    for M in members:
        for fwd in args.forward:
            ms = [make_model(s, device, dtype) for s in range(M)]
            data = [(X, Y) for Y in Ys[:M]]
            cfgs = [TrainConfig(**{**cfg.to_dict(), "seed": s}) for s in range(M)]
            warms = [TrainConfig(**{**warm.to_dict(), "seed": s}) for s in range(M)]
            runs[f"(3) ensemble M={M} {fwd}"] = (
                M,
                lambda ms=ms, data=data, w=warms, f=fwd: fit_ensemble(ms, data, w, forward=f),
                lambda ms=ms, data=data, c=cfgs, f=fwd: fit_ensemble(ms, data, c, forward=f),
            )
    times = {k: [] for k in runs}
    for k, (_, warmup, _) in runs.items():
        warmup()
    for _ in range(args.repeats):
        for k, (_, _, run) in runs.items():
            times[k].append(timed(run, device))

    rate = {k: runs[k][0] * args.epochs / statistics.median(t) for k, t in times.items()}
    print(f"\n2-64x4-1 tanh MLP, Adam, {n} points, batch {args.batch}, {args.epochs} epochs x {args.repeats} "
          f"repeats (median; +1 warm-up epoch); {flops_epoch / 1e9:.3g} GFLOP per model-epoch")
    peak = args.peak_tflops if device.type == "cuda" else None
    head = f"{'version':<26} {'model-ep/s':>10} {'vs (1)':>8} {'vs (2)':>8} {'GFLOP/s':>9}"
    print(head + (f" {'% peak':>7}" if peak else ""))
    r1, r2 = rate["(1) plain loop"], rate["(2) sciprune.fit"]
    for k in runs:
        gf = rate[k] * flops_epoch / 1e9
        line = f"{k:<26} {rate[k]:10.3f} {rate[k] / r1:8.2f} {rate[k] / r2:8.2f} {gf:9.2f}"
        if peak:
            line += f" {gf / (peak * 1e3):7.1%}"
        print(line)


if __name__ == "__main__":
    main()
