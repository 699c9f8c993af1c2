"""Inference time of neuron-pruned networks: compacted against dense and masked, at 50/75/90% neuron sparsity.

For two networks, the 2-40x6-1 tanh surrogate and LeNet-300-100 (784-300-100-10, ReLU), both
``sciprune.MLP(..., seed=0)``, and each neuron sparsity s in ``--sparsities`` (0.5, 0.75, 0.9), the
forward pass (``torch.inference_mode``, float32) of three versions is timed:

- ``dense``: the unpruned network;
- ``masked s``: ``sciprune.prune(model, "neuron-magnitude", s)`` (global ranking: a fraction s of all
  hidden neurons removed by the L2 norm of their incoming weights), the network at full size with its
  masks: the removed neurons' rows, bias entries and next-layer columns are zeros that are computed;
- ``compact s``: ``sciprune.compact`` of the masked network, physically smaller; its outputs are
  asserted equal to the masked network's to float32 rounding on every batch before timing.

Batches of 1 (a simulation calling one point at a time), 1024 and 65536 rows. For each (network,
batch) all versions (dense once, masked and compacted at every sparsity) are timed in one process
after a warm-up, in ``--repeats`` interleaved repeats whose order rotates by one each repeat; each
repeat times ``calls`` calls of every version, ``calls`` chosen once from a timed dense call so that
the dense version takes about ``--target-s`` seconds per repeat. The table gives the median ms/call
over repeats (and its min and max); ``x dense``, the median over repeats of the per-repeat ratio
dense time / this version's time (above 1: faster than dense); ``x masked`` (compacted rows), the
same against the masked network of the same sparsity; the MFLOPs of one call; ``FLOP ratio``, dense
FLOPs / this version's FLOPs; and the GFLOP/s achieved (FLOPs / median time).

FLOPs are counted as 2*B*sum(in*out) over the Linear layers of the version as it is stored (one
multiply and one add per weight and row; biases and activations not counted; the script asserts the
count equals ``torch.utils.flop_counter.FlopCounterMode``'s): the masked version has the dense count (it
multiplies its zeros), the compacted version the count of its smaller shapes, so its ``FLOP ratio`` is
the speed-up compaction would give if time followed FLOPs.

Run:  python benchmarks/bench_inference.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import interleaved_ms_per_step, setup, sync, timed
from bench_mask_step import cpu_model
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import sciprune
from sciprune.models import linear_chain

NETWORKS = {
    "2-40x6-1 tanh surrogate": ((2, [40] * 6, 1, "tanh"), lambda b, g: torch.rand(b, 2, generator=g) * 2 - 1),
    "LeNet-300-100 ReLU": ((784, [300, 100], 10, "relu"), lambda b, g: torch.rand(b, 784, generator=g)),
}


def forward_flops(model: nn.Module, batch: int) -> int:
    """FLOPs of one forward pass as stored: 2*B*sum(in*out) over the Linear layers (zeros included)."""
    return 2 * batch * sum(lin.in_features * lin.out_features for lin in linear_chain(model))


def check_flops(model: nn.Module, x: torch.Tensor) -> None:
    """Assert :func:`forward_flops` equals torch's own count (``FlopCounterMode``: 2*M*N*K per matmul)."""
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert counter.get_total_flops() == forward_flops(model, x.shape[0]), widths(model)


def widths(model: nn.Module) -> str:
    """The layer widths of a Linear chain, e.g. ``2-18-24-1``."""
    lins = linear_chain(model)
    return "-".join(str(n) for n in [lins[0].in_features] + [lin.out_features for lin in lins])


def calls_for(seconds_per_call: float, target_s: float, max_calls: int) -> int:
    """Calls per repeat so that they take about ``target_s``: round(target_s / seconds_per_call) in [1, max_calls]."""
    return max(1, min(max_calls, round(target_s / max(seconds_per_call, 1e-9))))


def build_versions(spec: tuple, sparsities, device: torch.device) -> dict[str, nn.Module]:
    """name -> model: ``dense``, then ``masked s`` and ``compact s`` for each sparsity s, all in eval mode."""
    versions = {"dense": sciprune.MLP(*spec, seed=0)}
    for s in sparsities:
        masked = sciprune.MLP(*spec, seed=0)
        sciprune.prune(masked, "neuron-magnitude", s)
        versions[f"masked {s:.0%}"] = masked
        versions[f"compact {s:.0%}"] = sciprune.compact(masked)
    return {name: m.to(device, torch.float32).eval() for name, m in versions.items()}


def check_compact(versions: dict[str, nn.Module], x: torch.Tensor) -> float:
    """Assert each compacted version's outputs equal its masked version's to float32 rounding; the
    largest |difference| relative to max |masked output|."""
    worst = 0.0
    for name in [n for n in versions if n.startswith("compact")]:
        ref = versions["masked" + name[len("compact"):]](x)
        out = versions[name](x)
        scale = float(ref.abs().max()) or 1.0
        err = float((out - ref).abs().max()) / scale
        assert err <= 1e-5, f"{name}: outputs differ from the masked network's by {err:.2e} (relative)"
        worst = max(worst, err)
    return worst


def bench(title: str, spec: tuple, make_x, args, device: torch.device) -> None:
    versions = build_versions(spec, args.sparsities, device)
    names = list(versions)
    print(f"\n{title}: " + "; ".join(f"{s:.0%} -> {widths(versions[f'compact {s:.0%}'])}" for s in args.sparsities)
          + f" (dense {widths(versions['dense'])})")
    g = torch.Generator().manual_seed(0)
    for batch in args.batches:
        x = make_x(batch, g).to(device, torch.float32)
        with torch.inference_mode():
            for m in versions.values():  # warm-up
                for _ in range(args.warmup):
                    m(x)
            err = check_compact(versions, x)
            if batch == args.batches[0]:
                for m in versions.values():
                    check_flops(m, x)
            t1 = min(timed(lambda: versions["dense"](x), device) for _ in range(3))
            calls = calls_for(t1, args.target_s, args.max_calls)

            def run(name: str, x=x, calls=calls) -> None:
                m = versions[name]
                for _ in range(calls):
                    m(x)

            sync(device)
            t0 = time.perf_counter()
            ms = interleaved_ms_per_step(run, names, args.repeats, calls, device)
            wall = time.perf_counter() - t0
        print(f"batch {batch}: {calls} calls x {args.repeats} repeats per version ({wall:.1f} s); "
              f"compact vs masked max rel. diff {err:.1e}")
        print(f"{'version':<13} {'ms/call':>10} {'min':>10} {'max':>10} {'x dense':>7} {'x masked':>8} "
              f"{'MFLOP':>10} {'FLOP ratio':>10} {'GFLOP/s':>8}")
        dense_flops = forward_flops(versions["dense"], batch)
        for name in names:
            t = ms[name]
            flops = forward_flops(versions[name], batch)
            vs_dense = f"{statistics.median(d / c for d, c in zip(ms['dense'], t)):7.2f}"
            vs_masked = f"{'':>8}"
            if name.startswith("compact"):
                masked = ms["masked" + name[len("compact"):]]
                vs_masked = f"{statistics.median(m / c for m, c in zip(masked, t)):8.2f}"
            print(f"{name:<13} {statistics.median(t):10.4f} {min(t):10.4f} {max(t):10.4f} {vs_dense} {vs_masked} "
                  f"{flops / 1e6:10.4g} {dense_flops / flops:10.2f} {flops / statistics.median(t) / 1e6:8.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--repeats", type=int, default=9, help="interleaved repeats; the median is reported")
    ap.add_argument("--warmup", type=int, default=2, help="untimed calls per version and batch before timing")
    ap.add_argument("--target-s", type=float, default=0.2,
                    help="seconds the dense version takes per repeat (sets the calls; at least one call)")
    ap.add_argument("--max-calls", type=int, default=3000, help="most calls per repeat")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 1024, 65536])
    ap.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.75, 0.9])
    ap.add_argument("--quick", action="store_true",
                    help="a short run: 3 repeats, 0.02 s per repeat, batches up to 1024")
    args = ap.parse_args(argv)
    if args.quick:
        args.repeats, args.target_s, args.batches = 3, 0.02, [b for b in args.batches if b <= 1024] or [1]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available; use --device cpu")
    device, _ = setup(args)
    if device.type == "cpu":
        print(f"cpu: {cpu_model()}")
    for title, (spec, make_x) in NETWORKS.items():
        bench(title, spec, make_x, args, device)


if __name__ == "__main__":
    main()
