"""Print the tables of docs/neuron_study.md from a neuron-pruning study's results.

    sciprune sweep --workers 2 cases/neurons_digits.toml
    python docs/neuron_study_tables.py runs/neurons_digits

For each architecture and noise level, mean +- standard deviation over seeds, per variant and neuron
sparsity: the fine-tuned test metric (accuracy for classification, clean-target MSE for regression), the
just-pruned one, the K-FAC spectral radius (the largest over the Linear layers), the top Hessian
eigenvalue, and the forward time per row at batch one and the whole test split in one call.
"""

from __future__ import annotations

import sys
from pathlib import Path

from gradual_study_tables import _table

from sciprune.results import read_dataset


def tables(folder: Path) -> None:
    """The tables of ``folder/results.nc`` (or of ``folder`` itself when it is a results file)."""
    ds = read_dataset(folder if folder.is_file() else folder / "results.nc")
    metric = "test_accuracy" if "test_accuracy" in ds else "test_mse_clean"
    for arch in ds["arch"].values:
        for level in ds["noise"].values:
            at = {"arch": arch, "noise": level}
            print(f"\n## {folder.name}: {arch}, noise {level:g}")
            dense = {k: float(ds[f"dense_{k}"].sel(at).mean()) for k in (metric,)}
            line = f"\ndense {metric}: {dense[metric]:.4g}"
            if "dense_kfac_radius" in ds:
                line += f"; K-FAC radius {float(ds['dense_kfac_radius'].sel(at).max('linear').mean()):.3g}"
            if "dense_hessian_eig" in ds:
                line += f"; top eigenvalue {float(ds['dense_hessian_eig'].sel(at).sel(eig=1).mean()):.3g}"
            if "dense_inference_us" in ds:
                us = ds["dense_inference_us"].sel(at).mean("seed")
                line += "; us/row " + ", ".join(f"{b} {float(us.sel(batch=b)):.3g}" for b in us["batch"].values)
            print(line)
            _table(ds[metric].sel(at).sel(stage="finetuned"), f"fine-tuned {metric}", digits=4)
            _table(ds[metric].sel(at).sel(stage="pruned"), f"just-pruned {metric}", digits=3)
            if "kfac_radius" in ds:
                _table(ds["kfac_radius"].sel(at).max("linear"), "K-FAC spectral radius (largest over the layers)")
            if "hessian_eig" in ds:
                _table(ds["hessian_eig"].sel(at).sel(eig=1), "top Hessian eigenvalue of the training loss")
            if "inference_us" in ds:
                for b in ds["batch"].values:
                    _table(ds["inference_us"].sel(at).sel(batch=b), f"forward time per row (us), batch {b}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        tables(Path(arg))
