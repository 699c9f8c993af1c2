#!/usr/bin/env python
"""Generate PDEBench's 1D diffusion-sorption data set (Takamoto et al. 2022) into one HDF5 file.

du/dt = D / R(u) d2u/dx2 on (0, 1) x [0, 500], R(u) = 1 + ((1-phi)/phi) rho_s k_f n_f (u + 1e-6)^(n_f-1),
constant initial value c ~ U(0, 0.2) drawn from seed i for sample i. The file has PDEBench's layout
(see datasets/README.md). A thin wrapper over :func:`sciprune.data.diffsorp.generate`, the same
call that ``sciprune generate diffusion-sorption`` makes.

Examples::

    python datasets/diffusion_sorption.py --out diff_sorp.h5 --samples 10000            # accurate
    python datasets/diffusion_sorption.py --out 1D_diff-sorp_repro.h5 --mode pdebench    # PDEBench

Re-running the same command after an interruption (Ctrl-C, a kill, a full disk) resumes: finished
samples are kept, half-written ones redone, and the completed file equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

try:
    from sciprune.data.diffsorp import generate
    from sciprune.errors import SciPruneError
except ImportError:  # running from a source checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sciprune.data.diffsorp import generate
    from sciprune.errors import SciPruneError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, type=Path, help="HDF5 file to write or resume")
    ap.add_argument("--samples", type=int, default=10_000, help="number of samples (default 10000)")
    ap.add_argument("--nx", type=int, default=1024, help="number of cells (default 1024)")
    ap.add_argument("--nt", type=int, default=101, help="number of output times (default 101)")
    ap.add_argument("--mode", choices=["accurate", "pdebench"], default="accurate",
                    help="accurate: converged in time (~1e-8); pdebench: PDEBench's RK45 defaults")
    ap.add_argument("--workers", type=int, default=None, help="processes (default min(2, CPUs))")
    ap.add_argument("--first-seed", type=int, default=0, help="seed of the first sample (default 0)")
    ap.add_argument("--overwrite", action="store_true", help="start a new file instead of resuming")
    ap.add_argument("--quiet", action="store_true", help="no progress line")
    args = ap.parse_args(argv)

    start = time.perf_counter()

    def progress(done: int, total: int) -> None:
        if not args.quiet:
            elapsed = time.perf_counter() - start
            print(f"\r{done}/{total} samples, {elapsed:.0f} s", end="", file=sys.stderr, flush=True)

    try:
        path = generate(args.out, n_samples=args.samples, nx=args.nx, nt=args.nt, mode=args.mode,
                        workers=args.workers, first_seed=args.first_seed, progress=progress,
                        overwrite=args.overwrite)
    except (SciPruneError, OSError) as exc:  # one line: the file and what is wrong, no traceback
        print(f"\nerror: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(file=sys.stderr)
    print(f"wrote {path} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
