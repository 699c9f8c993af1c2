#!/usr/bin/env python
"""Time and error of the diffusion-sorption generator against PDEBench's plain algorithm.

Rows, per grid size nx (all on the same semi-discrete system, PDEBench / Takamoto et al. 2022):

* ``peer: plain PDEBench RK45`` -- what a user would otherwise run: a scipy.sparse tridiagonal
  Laplacian, ``D/R(u) (A u) + b`` and ``solve_ivp`` at its defaults (RK45, rtol 1e-3, atol 1e-6),
  one sample at a time. Written here from the equations, not imported from sciprune.
* ``sciprune pdebench`` -- ``solve_sample(mode="pdebench")`` (the same algorithm).
* ``sciprune accurate batched`` -- batched RODAS4, one process, ``--samples`` samples per batch.
* ``sciprune accurate radau`` / ``bdf`` -- the scipy reference paths (rtol 1e-10, atol 1e-12).
* ``generate(workers=2)`` -- the whole pipeline to an HDF5 file with two worker processes.

Errors are the max abs difference over the (nt, nx) field against a converged reference
(scipy Radau, rtol 1e-12, atol 1e-14, analytic Jacobian), maximised over the first ``--err-seeds``
seeds. At the smallest nx the reference itself is checked against DOP853 at rtol 1e-13.

    python benchmarks/bench_generator.py                 # nx 1024 and 128, ~3-5 min on 2 cores
    python benchmarks/bench_generator.py --nx 256 --samples 16
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
from scipy.integrate import solve_ivp

try:
    import sciprune.data.diffsorp as ds
except ImportError:  # source checkout without installation
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import sciprune.data.diffsorp as ds
from sciprune.data.diffsorp_solvers import scipy_implicit

T_EVAL = np.linspace(0.0, 500.0, 101)


def plain_rhs(nx: int):
    """PDEBench's right-hand side as a user would write it: ``D/R(u) (A u) + b``, A sparse."""
    D, por, rho_s, k_f, n_f = 5e-4, 0.29, 2880.0, 3.5e-4, 0.874
    dx = 1.0 / nx
    lap = sp.diags([np.ones(nx - 1), -2.0 * np.ones(nx), np.ones(nx - 1)], [-1, 0, 1],
                   format="csr") / dx**2

    def rhs(t, u):
        r = 1 + (1 - por) / por * rho_s * k_f * n_f * (u + 1e-6) ** (n_f - 1)
        b = np.zeros(nx)
        b[0] = D / r[0] / dx**2 * 1.0
        b[-1] = D / r[-1] / dx**2 * (D * (u[-2] - u[-1]) / dx)
        return D / r * (lap @ u) + b

    return rhs


def peer_rk45(c0: float, nx: int) -> np.ndarray:
    """The peer: PDEBench's algorithm, solve_ivp at its defaults (RK45, rtol 1e-3, atol 1e-6)."""
    with np.errstate(invalid="ignore"):
        sol = solve_ivp(plain_rhs(nx), (0.0, 500.0), np.full(nx, c0), t_eval=T_EVAL)
    return sol.y.T


def timed(fn, *args, **kw):
    """Run fn; return (result, wall seconds, CPU seconds of this process and reaped children)."""
    r0, c0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.process_time()
    w0 = time.perf_counter()
    out = fn(*args, **kw)
    wall = time.perf_counter() - w0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time() - c0 + (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    return out, wall, cpu


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def bench_nx(nx: int, args: argparse.Namespace) -> list[dict]:
    """Rows {name, wall, cpu (per sample), err (max, rmse) or None, parallel (bool)}."""
    c0 = [ds.initial_value(s) for s in range(args.err_seeds)]
    refs = []
    for c in c0:
        ref, w, _ = timed(scipy_implicit, c, nx, T_EVAL, method="Radau", rtol=1e-12, atol=1e-14)
        refs.append(ref)
    print(f"  reference Radau rtol 1e-12: {w:.2f} s/sample", flush=True)
    if nx <= 256:
        dop = solve_ivp(plain_rhs(nx), (0.0, 500.0), np.full(nx, c0[0]), method="DOP853",
                        rtol=1e-13, atol=1e-15, t_eval=T_EVAL).y.T
        print(f"  reference check vs DOP853 rtol 1e-13: max diff {np.abs(dop - refs[0]).max():.1e}")

    def err(sols):
        """(max abs error, RMSE) over the (nt, nx) fields, worst over the seeds."""
        return (max(np.abs(s - r).max() for s, r in zip(sols, refs)),
                max(np.sqrt(np.mean((s - r) ** 2)) for s, r in zip(sols, refs)))

    def one_by_one(name, fn, seeds_c0, **kw):
        sols, wall, cpu = [], 0.0, 0.0
        for c in seeds_c0:
            u, w, t = timed(fn, c, nx=nx, **kw)
            sols.append(u)
            wall, cpu = wall + w, cpu + t
        n = len(seeds_c0)
        rows.append(dict(name=name, wall=wall / n, cpu=cpu / n, err=err(sols), parallel=False))
        print(f"  {name}: {wall / n:.3f} s/sample wall, {cpu / n:.3f} CPU", flush=True)
        return sols

    rows: list[dict] = []
    peer = one_by_one("peer: plain PDEBench RK45", lambda c, nx: peer_rk45(c, nx), c0)
    ours = one_by_one("sciprune pdebench (RK45)", ds.solve_sample, c0, mode="pdebench")
    gap = max(np.abs(a - b).max() for a, b in zip(ours, peer))
    print(f"  sciprune pdebench vs peer: max diff {gap:.1e}", flush=True)

    n = max(args.samples, len(c0))
    batch, w, t = timed(ds.solve_batch, [ds.initial_value(s) for s in range(n)], nx=nx)
    rows.append(dict(name=f"sciprune accurate batched (B={n})", wall=w / n, cpu=t / n,
                     err=err(batch[: len(c0)]), parallel=False))
    print(f"  accurate batched: {w / n:.3f} s/sample wall, {t / n:.3f} CPU", flush=True)
    for solver in ("radau", "bdf"):
        one_by_one(f"sciprune accurate {solver} (1e-10)", ds.solve_sample, c0[:1], solver=solver)

    if args.generate_samples > 0:
        m = args.generate_samples
        with tempfile.TemporaryDirectory() as tmp:
            _, w, t = timed(ds.generate, Path(tmp) / "bench.h5", n_samples=m, nx=nx,
                            workers=args.workers)
        rows.append(dict(name=f"generate() accurate, {args.workers} workers, {m} samples",
                         wall=w / m, cpu=t / m, err=None, parallel=True))
        print(f"  generate: {w / m:.3f} s/sample wall, {t / m:.3f} CPU", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nx", type=int, nargs="+", default=[1024, 128])
    ap.add_argument("--samples", type=int, default=32, help="batch size timed for accurate mode")
    ap.add_argument("--err-seeds", type=int, default=2,
                    help="seeds 0..k-1 for the errors and the RK45 timings (RK45 is slow)")
    ap.add_argument("--generate-samples", type=int, default=256,
                    help="samples for the end-to-end generate() timing (0 skips it)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)

    print(f"date {datetime.date.today()}; CPU: {cpu_model()}, {os.cpu_count()} logical cores; "
          f"python {platform.python_version()}, numpy {np.__version__}, scipy {scipy.__version__}")
    print(f"load average at start: {os.getloadavg()[0]:.2f} (other processes share the CPUs)")
    t_all = time.perf_counter()
    for nx in args.nx:
        print(f"\nnx = {nx}, nt = 101, t in [0, 500]", flush=True)
        rows = bench_nx(nx, args)
        peer = rows[0]
        print(f"\n| nx={nx}: method | wall s/sample | CPU s/sample | CPU speed-up vs peer |"
              f" max abs err vs ref | RMSE vs ref | 10k samples on {args.workers} cores"
              " (from CPU time) |")
        print("|---|---|---|---|---|---|---|")
        for r in rows:
            e = "- | -" if r["err"] is None else f"{r['err'][0]:.1e} | {r['err'][1]:.1e}"
            est = r["cpu"] * 10_000 / args.workers / 60
            print(f"| {r['name']} | {r['wall']:.3f} | {r['cpu']:.3f} |"
                  f" {peer['cpu'] / r['cpu']:.1f}x | {e} | {est:.1f} min |")
        gen = [r for r in rows if r["parallel"]]
        if gen:
            print(f"generate() measured wall time for 10k at this rate: "
                  f"{gen[0]['wall'] * 10_000 / 60:.1f} min")
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}; total {time.perf_counter() - t_all:.0f} s")
    print("CPU-time estimates assume two otherwise idle cores; wall times include any contention"
          " from other processes on the machine (see the load averages).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
