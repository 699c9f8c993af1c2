"""Print the tables of docs/loss_modelling_study.md from a loss-modelling study's results, and draw its figure.

    sciprune --threads 1 run cases/loss_modelling_digits.toml
    python docs/loss_modelling_tables.py runs/loss_modelling_digits [--figure docs/figures/loss_modelling_digits.png]

For each architecture and noise level, mean +- standard deviation over seeds, per variant and ratio: the
training loss and the test metric right after pruning (stage ``pruned``) and after fine-tuning
(``finetuned``); LM against QM at each locality setting (question 1); Spearman's rank correlation, across
the variants at each ratio, between the training loss right after pruning and the fine-tuned test metric
(question 2, with the figure); EC one-shot against multi-step and obs-layer (questions 3 and 4).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from gradual_study_tables import _table  # docs/: the same 'mean ± std' table

from sciprune.results import read_dataset

#: (LM variant, QM variant, what they share): the same locality for both models (question 1).
PAIRS = [("lm", "qm", "one-shot, lambda 0"), ("lm-lam1e-4", "qm-lam1e-4", "one-shot, lambda 1e-4"),
         ("lm-lam1e-3", "qm-lam1e-3", "one-shot, lambda 1e-3"), ("lm-lam1e-2", "qm-lam1e-2", "one-shot, lambda 1e-2"),
         ("lm-14", "qm-14", "14 steps, lambda 0"), ("lm-140", "qm-140", "140 steps, lambda 0")]


def _metric(ds) -> tuple[str, str]:
    """The test metric (higher is better for accuracy) and the training loss of the task."""
    return ("test_accuracy", "train_loss") if "test_accuracy" in ds else ("test_mse_clean", "train_mse")


def _pairs(ds, at: dict, metric: str, loss: str) -> None:
    """Question 1: QM minus LM, mean over seeds, for each shared locality setting and ratio."""
    have = [p for p in PAIRS if {p[0], p[1]} <= set(ds["method"].values)]
    if not have:
        return
    print("\n### QM minus LM, same locality (mean over seeds of the per-seed difference)\n")
    ratios = ds["ratio"].values
    print(f"| setting | stage | quantity | " + " | ".join(f"{r:g}" for r in ratios) + " |")
    print("|---|---|---|" + "---|" * len(ratios))
    for lm, qm, what in have:
        for stage, var in (("pruned", loss), ("pruned", metric), ("finetuned", metric)):
            d = (ds[var].sel(at).sel({"stage": stage, "method": qm})
                 - ds[var].sel(at).sel({"stage": stage, "method": lm})).mean("seed")
            print(f"| {what} | {stage} | {var} | " + " | ".join(f"{v:+.3g}" for v in d.values) + " |")


def correlations(ds, at: dict, metric: str, loss: str) -> dict[float, tuple[float, float, int]]:
    """Question 2, per ratio: Spearman's rho (and p-value) across the variants between the mean training
    loss right after pruning and the mean fine-tuned test metric, over the variants pruned before their
    fine-tuning (every variant of these cases)."""
    out = {}
    for r in ds["ratio"].values:
        x = ds[loss].sel(at).sel(stage="pruned", ratio=r).mean("seed").values
        y = ds[metric].sel(at).sel(stage="finetuned", ratio=r).mean("seed").values
        rho, p = spearmanr(x, y)
        out[float(r)] = (float(rho), float(p), len(x))
    return out


def _figure(ds, at: dict, metric: str, loss: str, path: Path) -> None:
    """Fine-tuned test metric against the training loss right after pruning, one point per variant and
    ratio (mean over seeds), one panel per ratio, rho in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rhos = correlations(ds, at, metric, loss)
    ratios = ds["ratio"].values
    fig, axes = plt.subplots(1, len(ratios), figsize=(2.6 * len(ratios), 2.8), dpi=90)
    for ax, r in zip(np.atleast_1d(axes), ratios):
        x = ds[loss].sel(at).sel(stage="pruned", ratio=r).mean("seed").values
        y = ds[metric].sel(at).sel(stage="finetuned", ratio=r).mean("seed").values
        for m, xi, yi in zip(ds["method"].values, x, y):
            kind = "o" if "-" not in m else ("s" if m.split("-")[-1].isdigit() else "^")
            ax.scatter(xi, yi, marker=kind, s=14, color=f"C{list(ds['method'].values).index(m) % 10}")
        ax.set_xscale("log")
        ax.set_title(f"ratio {r:g}: rho = {rhos[float(r)][0]:+.2f}", fontsize=8)
        ax.set_xlabel(f"{loss} just pruned", fontsize=7)
        ax.tick_params(labelsize=6)
    np.atleast_1d(axes)[0].set_ylabel(f"{metric} fine-tuned", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def tables(folder: Path, figure: Path | None = None) -> None:
    ds = read_dataset(folder / "results.nc")
    metric, loss = _metric(ds)
    for arch in ds["arch"].values:
        for level in ds["noise"].values:
            at = {"arch": arch, "noise": level}
            print(f"\n## {folder.name}: {arch}, noise {level:g}")
            print(f"\ndense {metric}: {float(ds[f'dense_{metric}'].sel(at).mean()):.4g}, dense {loss}: "
                  f"{float(ds[f'dense_{loss}'].sel(at).mean()):.3g}")
            _table(ds[loss].sel(at).sel(stage="pruned"), f"{loss} right after pruning")
            _table(ds[metric].sel(at).sel(stage="pruned"), f"{metric} right after pruning")
            _table(ds[metric].sel(at).sel(stage="finetuned"), f"{metric} after fine-tuning")
            _pairs(ds, at, metric, loss)
            print(f"\n### Spearman rho across variants: {loss} just pruned vs {metric} fine-tuned (means over seeds)\n")
            print("| ratio | rho | p | variants |\n|---|---|---|---|")
            for r, (rho, p, n) in correlations(ds, at, metric, loss).items():
                print(f"| {r:g} | {rho:+.2f} | {p:.2g} | {n} |")
            if figure is not None:
                _figure(ds, at, metric, loss, figure)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--figure", type=Path, default=None)
    args = parser.parse_args()
    tables(args.folder, args.figure)
