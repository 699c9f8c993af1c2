"""Print the tables of docs/ec_study.md from the results of the two EC studies.

    sciprune run cases/ec_digits.toml
    sciprune run cases/ec_diffusion_sorption_cpu.toml
    python docs/ec_study_tables.py runs/ec_digits runs/ec_diffusion_sorption_cpu

For each study: the mean over seeds of the ranking metric per method and ratio (just pruned and
fine-tuned), and a linearisation check on the first seed's saved dense network: the summed EC
importances of the removed weights (what the criterion predicts for the mean squared output change)
against the true mean squared output change, without and with the bias shifts.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

import sciprune
from sciprune.cli import _reload_task
from sciprune.masks import get_masks
from sciprune.pruning import apply_plan, plan
from sciprune.report import default_metric
from sciprune.results import read_dataset


def tables(folder: Path) -> None:
    ds = read_dataset(folder / "results.nc")
    metric = default_metric(ds)
    extra = ["test_accuracy"] if "test_accuracy" in ds else []
    pd.set_option("display.width", 200)
    for arch in ds["arch"].values:
        for m in [metric, *extra]:
            for stage in ds["stage"].values:
                for level in ds["noise"].values:
                    sel = {"arch": arch, "stage": stage, "noise": level}
                    df = ds[m].sel(sel).mean("seed").to_pandas()
                    print(f"\n## {folder.name}: {arch}, noise {level:g}, {stage}: {m} (mean over {ds.sizes['seed']} seeds)")
                    print(df.to_string(float_format=lambda v: f"{v:.3g}"))
                    if f"scratch_{m}" in ds:
                        sc = ds[f"scratch_{m}"].sel({"arch": arch, "noise": level}).mean("seed").to_pandas()
                        print("scratch  " + "  ".join(f"{v:.3g}" for v in sc.values))
                    print(f"dense    {float(ds[f'dense_{m}'].sel({'arch': arch, 'noise': level}).mean()):.3g}")


def linearisation(folder: Path, ratios=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)) -> None:
    for path in sorted((folder / "models").glob("dense_*.sciprune")):
        sur = sciprune.load(path)
        loaded, _ = _reload_task(sur, "cpu")
        model = sur.model.double()
        X, Y = loaded.task.X_train.double(), loaded.task.Y_train
        Y = Y.double() if Y.is_floating_point() else Y
        with torch.no_grad():
            y0 = model(X)
        p = plan(model, "ec", (X, Y))
        print(f"\n## {path.name}: EC's linear prediction against the true mean squared output change")
        print("ratio  predicted(sum I)  true(no shift)  true(with shift)")
        for r in ratios:
            true = []
            for variant in (replace(p, shifts=None), p):
                m = copy.deepcopy(model)
                apply_plan(m, variant, r)
                with torch.no_grad():
                    true.append(float(((m(X) - y0) ** 2).sum(1).mean()))
            keep = get_masks(m)
            pred = sum(float(p.scores[n][~keep[n]].sum()) for n in keep)
            print(f"{r:5.2f}  {pred:16.4g}  {true[0]:14.4g}  {true[1]:16.4g}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    for arg in sys.argv[1:]:
        tables(Path(arg))
        linearisation(Path(arg))
