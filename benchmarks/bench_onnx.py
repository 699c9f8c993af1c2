"""Calls per second of an exported ONNX surrogate under ONNX Runtime against ``sciprune.load(...)`` in torch.

The 2-40x6-1 tanh surrogate (float32, input and output scaling as for diffusion-sorption) is saved,
exported with :func:`sciprune.export.export_onnx`, and called on float64 arrays in physical units in
both ways: ``session.run(None, {"input": x})`` and ``sciprune.load(path)(x)``. A second pair uses the
same network with ``--neuron-ratio`` of its hidden neurons removed by ``neuron-magnitude``: torch runs
the masked full-size network, the ONNX graph the compacted one. Batch 1 (a simulation code calling one
point at a time) and batch 4096; the variants are interleaved in one process, the order rotated each
repeat, after a warm-up; the table gives the median calls/s over repeats and the median of the
per-repeat ratios to torch on the same network.

Run:  python benchmarks/bench_onnx.py --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import interleaved_ms_per_step, setup

import sciprune
from sciprune.export import export_onnx
from sciprune.scaling import Scaling


def save(folder: Path, name: str, neuron_ratio: float) -> Path:
    model = sciprune.MLP(2, [40] * 6, 1, "tanh", seed=0)
    if neuron_ratio:
        sciprune.prune(model, "neuron-magnitude", neuron_ratio)
    return sciprune.save(model, folder / f"{name}.sciprune", input_scaling=Scaling([0.5, 250.0], [0.5, 250.0]),
                         output_scaling=Scaling([0.4], [0.3]), input_names=["x", "t"], output_names=["u"])


def main() -> None:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu"])
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads and ONNX Runtime's intra-op threads")
    ap.add_argument("--neuron-ratio", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=2000, help="calls per repeat at batch 1 (batch 4096: calls / 40)")
    args = ap.parse_args()
    setup(args)
    print(f"onnxruntime {ort.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        runners = {}
        for name, ratio in (("dense", 0.0), (f"{args.neuron_ratio:.0%} neurons", args.neuron_ratio)):
            path = save(folder, "dense" if not ratio else "pruned", ratio)
            report = export_onnx(path, folder / f"{path.stem}.onnx")
            print(f"{name}: {report.describe_compaction()}")
            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = args.threads or 0, 1
            session = ort.InferenceSession(str(report.path), opts, providers=["CPUExecutionProvider"])
            runners[f"torch {name}"] = sciprune.load(path)
            runners[f"onnx {name}"] = lambda x, s=session: s.run(None, {"input": x})[0]
        print(f"{'batch':>5} {'variant':<22} {'calls/s':>10} {'min':>10} {'max':>10} {'x torch':>8}")
        rng = np.random.default_rng(0)
        for batch, calls in ((1, args.calls), (4096, max(args.calls // 40, 1))):
            x = np.c_[rng.uniform(0, 1, batch), rng.uniform(0, 500, batch)]
            for f in runners.values():  # warm-up, and the same answer both ways
                f(x)
            for name in [n for n in runners if n.startswith("onnx")]:
                ref = runners["torch " + name.split(" ", 1)[1]](x)
                assert np.allclose(runners[name](x), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max()), name

            def run(name: str, x=x, calls=calls) -> None:
                f = runners[name]
                for _ in range(calls):
                    f(x)

            ms = interleaved_ms_per_step(run, list(runners), args.repeats, calls, torch.device("cpu"))
            for name, t in ms.items():
                base = ms["torch " + name.split(" ", 1)[1]]  # torch on the same network
                ratio = statistics.median(b / a for a, b in zip(t, base))
                rate = [1e3 / v for v in t]
                print(f"{batch:5d} {name:<22} {statistics.median(rate):10.0f} {min(rate):10.0f} {max(rate):10.0f} "
                      f"{ratio:8.2f}")


if __name__ == "__main__":
    main()
