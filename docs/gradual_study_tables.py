"""Print the tables of docs/gradual_study.md from a gradual-against-one-shot study's results.

    sciprune run cases/gradual_vs_oneshot_digits.toml
    python docs/gradual_study_tables.py runs/gradual_vs_oneshot_digits

For each architecture and noise level, mean +- standard deviation over seeds, per variant and ratio:
the fine-tuned test metric (accuracy for classification, clean-target MSE for regression), the top
Hessian eigenvalue, the PSP L2 norm and the second-order PSP-entropy of the first hidden layer, the
achieved sparsity of the variants that stop below the ratio (LOBSTER thresholded to each ratio); and
for each loss line, the barrier: the highest test loss along the line minus the higher of its two ends.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sciprune.results import read_dataset


def _table(da, title: str, digits: int = 3) -> None:
    """``da`` over (seed, method, ratio): 'mean +- std' per method and ratio."""
    mean, std = da.mean("seed").to_pandas(), da.std("seed").to_pandas()
    cells = mean.map(lambda v: f"{v:.{digits}g}") + " ± " + std.map(lambda v: f"{v:.1g}")
    print(f"\n### {title} (mean ± std over {da.sizes['seed']} seeds)\n")
    print("| method | " + " | ".join(f"{r:g}" for r in mean.columns) + " |")
    print("|---|" + "---|" * len(mean.columns))
    for method, row in cells.iterrows():
        print(f"| {method} | " + " | ".join(row.values) + " |")


def tables(folder: Path) -> None:
    """The tables of ``folder/results.nc`` (or of ``folder`` itself when it is a results file)."""
    ds = read_dataset(folder if folder.is_file() else folder / "results.nc")
    metric = "test_accuracy" if "test_accuracy" in ds else "test_mse_clean"
    pd.set_option("display.width", 200)
    for arch in ds["arch"].values:
        for level in ds["noise"].values:
            at = {"arch": arch, "noise": level}
            print(f"\n## {folder.name}: {arch}, noise {level:g}")
            print(f"\ndense {metric}: {float(ds[f'dense_{metric}'].sel(at).mean()):.4g}; dense top eigenvalue: "
                  f"{float(ds['dense_hessian_eig'].sel(at).sel(eig=1).mean()):.3g}" if "dense_hessian_eig" in ds else "")
            _table(ds[metric].sel(at).sel(stage="finetuned"), f"fine-tuned {metric}")
            short = [m for m in ds["method"].values
                     if (ds["sparsity"].sel(at).sel({"method": m}) < ds["ratio"] - 1e-3).any()]
            if short:  # variants whose sparsity emerges (LOBSTER) may stop below the ratio
                _table(ds["sparsity"].sel(at).sel({"method": short}), "achieved sparsity where below the ratio")
            if "hessian_eig" in ds:
                _table(ds["hessian_eig"].sel(at).sel(eig=1), "top Hessian eigenvalue of the training loss")
            if "psp_norm" in ds:
                _table(ds["psp_norm"].sel(at).sel(layer=1), "PSP L2 norm, first hidden layer")
            if "psp_pair_entropy" in ds and np.isfinite(ds["psp_pair_entropy"].sel(at).values).any():
                _table(ds["psp_pair_entropy"].sel(at).sel(layer=1), "second-order PSP-entropy (bits), first hidden layer")
            if "line_test_loss" in ds:
                line = ds["line_test_loss"].sel(at)
                ends = np.maximum(line.isel(alpha=0), line.isel(alpha=-1))
                barrier = (line.max("alpha") - ends).rename({"pair": "method"})
                _table(barrier, "loss barrier along the line (highest test loss minus the higher end)")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        tables(Path(arg))
