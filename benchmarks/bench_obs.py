"""Cost of Optimal Brain Surgeon, layer-wise and whole-network, against EC's scoring, in one run.

The PDEBench-style 2-40x6-1 tanh surrogate (8361 parameters, 8120 weights), trained for
``--train-steps`` full-batch Adam steps (lr 1e-3) on ``--n`` random points of [0,1]^2 with the smooth
target ``sin(pi x) exp(-t)`` (as ``bench_hessian_eigs``), is pruned to ``--ratio`` (0.9) of its weights:

* ``obs-layer``: ``sciprune.obs_layer.obs_layer_plan`` with ``damp`` 1e-6, all rows;
* ``obs``: ``sciprune.obs_network.obs_network_plan`` (the exact float64 Gauss-Newton matrix of all
  8361 parameters) with ``--block`` weights removed jointly per step and ``--damp`` (the matrix has
  rank at most n * outputs, below 8361 for n < 8361, so it needs dampening), all rows; its three
  phases (forming H, inverting it, the removals) are reported from its stats;
* ``ec``: ``sciprune.scores(model, "ec", data)``, the scores only (EC's selection and bias shifts are
  cheap next to them).

Each is run once after a warm-up on a small copy of the problem (the OBS plans are single-shot
methods of seconds to minutes; repeats would only cost CPU on a shared machine). Peak memory is the
rise of the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs`` before
each method; Linux only, "n/a" elsewhere) above its resident set before the method. Wall and CPU
seconds are both given: on a shared machine the CPU time is the steadier figure. ``MSE after``:
the training loss of a copy of the model with the plan applied (``sciprune.obs_layer.apply_obs``), no
fine-tuning; for ``ec``, ``sciprune.prune(copy, "ec", ratio, data)`` (scores, selection and the bias
shifts) for comparison.

Run:  python benchmarks/bench_obs.py --threads 2
"""

from __future__ import annotations

import argparse
import copy
import math
import re
import time

import torch
import torch.nn.functional as F
from _common import setup, sync
from bench_hessian_eigs import train  # full-batch Adam, lr 1e-3, MSE: the same trained surrogate

import sciprune
from sciprune.obs_layer import apply_obs, obs_layer_plan
from sciprune.obs_network import obs_network_plan


def _status(key: str) -> float | None:
    """A ``/proc/self/status`` entry in MiB (None where there is none)."""
    try:
        with open("/proc/self/status") as f:
            m = re.search(rf"{key}:\s+(\d+) kB", f.read())
        return int(m.group(1)) / 1024 if m else None
    except OSError:
        return None


def measured(fn, device):
    """``(result, wall seconds, CPU seconds, peak MiB above the resident set before, or None)`` of ``fn()``."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current resident set
    except OSError:
        pass
    base = _status("VmRSS")
    sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync(device)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = _status("VmHWM")
    return out, seconds, cpu, (None if base is None or peak is None else peak - base)


@torch.no_grad()
def mse_after(model, X, Y, apply) -> float:
    pruned = copy.deepcopy(model)
    apply(pruned)
    return float(F.mse_loss(pruned(X), Y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--n", type=int, default=2048, help="training points (rows of every method)")
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--ratio", type=float, default=0.9)
    ap.add_argument("--block", type=int, default=64, help="weights removed jointly per step by obs")
    ap.add_argument("--damp", type=float, default=1e-4, help="relative dampening of obs's Gauss-Newton matrix")
    args = ap.parse_args()
    device, dtype = setup(args)
    g = torch.Generator().manual_seed(0)
    model = sciprune.MLP(2, [40] * 6, 1, "tanh", seed=0).to(device, dtype)
    X = torch.rand(args.n, 2, generator=g, dtype=torch.float64)
    Y = torch.sin(math.pi * X[:, :1]) * torch.exp(-X[:, 1:])
    X, Y = X.to(device, dtype), Y.to(device, dtype)
    t0 = time.perf_counter()
    mse = train(model, X, Y, args.train_steps)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"2-40x6-1 tanh surrogate, {n_params} parameters, trained {args.train_steps} Adam steps in "
          f"{time.perf_counter() - t0:.1f} s, MSE {mse:.3e}; {args.n} rows; ratio {args.ratio}")

    data = (X, Y)
    small = sciprune.MLP(2, [8, 8], 1, "tanh", seed=0).to(device, dtype)  # warm-up: every code path once
    obs_layer_plan(small, (X[:64], Y[:64]), 0.5, damp=1e-6)
    obs_network_plan(small, (X[:64], Y[:64]), 0.5, block=args.block, damp=args.damp)
    sciprune.scores(small, "ec", (X[:64], Y[:64]))

    rows = []
    plan, *cost = measured(lambda: obs_layer_plan(model, data, args.ratio, damp=1e-6), device)
    rows.append(("obs-layer (damp 1e-6)", *cost, mse_after(model, X, Y, lambda m: apply_obs(m, plan))))
    plan, *cost = measured(lambda: obs_network_plan(model, data, args.ratio, block=args.block, damp=args.damp), device)
    rows.append((f"obs (block {args.block}, damp {args.damp:g})", *cost, mse_after(model, X, Y, lambda m: apply_obs(m, plan))))
    st = plan.stats
    _, *cost = measured(lambda: sciprune.scores(model, "ec", data), device)
    rows.append(("ec (scores only)", *cost, mse_after(model, X, Y, lambda m: sciprune.prune(m, "ec", args.ratio, data))))

    ec_s = rows[-1][1]
    print(f"\n{'method':32s} {'wall s':>9s} {'CPU s':>9s} {'x ec':>8s} {'peak MiB':>9s} {'MSE after':>10s}")
    for name, sec, cpu, mem, loss in rows:
        peak = "n/a" if mem is None else f"{mem:.0f}"
        print(f"{name:32s} {sec:9.3f} {cpu:9.3f} {sec / ec_s:8.0f} {peak:>9s} {loss:10.3e}")
    print(f"\nobs phases: H {st.seconds_hessian:.1f} s, inverse {st.seconds_inverse:.1f} s, removals "
          f"{st.seconds_removals:.1f} s ({st.step_losses.numel()} steps); H {st.hessian_bytes / 2**20:.0f} MiB "
          f"({st.params} parameters, {st.rows} rows); predicted loss increase {st.predicted_increase:.3e}")


if __name__ == "__main__":
    main()
