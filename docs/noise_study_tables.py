"""Print the tables of docs/noise_study.md from a noise-robustness study's results.

    sciprune sweep --workers 2 cases/noise_robustness_cpu.toml
    python docs/noise_study_tables.py runs/noise_robustness_cpu [--ratios 0.8 0.9 0.95]
    python docs/noise_study_tables.py runs/noise_robustness_cpu --twin runs/noise_robustness_cpu_gaussian --twin-level 0.1

Per architecture: (1) the dense network against the noise level: its test MSE against the clean field
and against the noisy targets, the noise variance (a^2/3 for U(-a, a), a^2 for N(0, a^2)) and the
signal-to-noise ratio rms(u)/std(noise); (2) for each of ``--ratios``, the fine-tuned and the just-pruned
clean-target MSE of every variant (and the scratch baseline) divided by the dense network's at the same
seed and level, geometric mean over seeds, as a (method x noise level) table: how much pruning costs as
the noise grows ("-": the variant stopped short of the ratio in some seed); (3) with ``--twin`` (the
Gaussian twin's results) and ``--twin-level`` (the uniform level of the same variance), the fine-tuned
clean MSE under each kind of noise per variant. The recommendation and how-far-to-prune tables are those of ``sciprune report``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from sciprune.data.noise import NoiseModel
from sciprune.report_robustness import noise_kind, snr
from sciprune.results import read_dataset
from sciprune.robustness import reached

METRIC = "test_mse_clean"


def _noise_variance(kind: str, a: float) -> float:
    """std^2 of the additive noise (:attr:`NoiseModel.std`); NaN for relative or unrecorded noise."""
    std = NoiseModel(kind, a).std if kind in ("uniform", "gaussian", "none") else None
    return float("nan") if std is None else std * std


def _dense(ds, arch) -> None:
    kind, ratios = noise_kind(ds), snr(ds)
    print(f"\n### {arch}: the dense network against the noise (mean over {ds.sizes['seed']} seeds)\n")
    print("| noise | SNR rms(u)/std | noise variance | dense MSE, clean | dense MSE, noisy | noisy - variance |")
    print("|---|---|---|---|---|---|")
    for i, level in enumerate(ds["noise"].values):
        at = {"arch": arch, "noise": level}
        var = _noise_variance(kind, float(level))
        ratio = float(ratios[i]) if ratios is not None else float("nan")
        clean = float(ds[f"dense_{METRIC}"].sel(at).mean())
        noisy = float(ds["dense_test_mse"].sel(at).mean())
        print(f"| {level:g} | {ratio:.3g} | {var:.3g} | {clean:.3g} | {noisy:.3g} | {noisy - var:.3g} |")


def _cost(ds, arch, ratio: float, stage: str) -> None:
    at = {"arch": arch, "ratio": ratio}
    dense = ds[f"dense_{METRIC}"].sel({"arch": arch})
    rel = np.log(reached(ds, METRIC).sel(at).sel(stage=stage) / dense)  # NaN: short of the ratio
    rows = {m: np.exp(rel.sel({"method": m}).mean("seed")).values for m in ds["method"].values}
    if f"scratch_{METRIC}" in ds:
        rows["scratch"] = np.exp(np.log(ds[f"scratch_{METRIC}"].sel(at) / dense).mean("seed")).values
    levels = ds["noise"].values
    print(f"\n### {arch}, {stage}, ratio {ratio:g}: clean MSE / dense clean MSE (geometric mean over seeds)\n")
    print("| method | " + " | ".join(f"noise {v:g}" for v in levels) + " |")
    print("|---|" + "---|" * len(levels))
    best = np.nanmin(np.array(list(rows.values())), axis=0)
    for m, vals in rows.items():
        cells = ["-" if np.isnan(v) else f"**{v:.3g}**" if v == b else f"{v:.3g}" for v, b in zip(vals, best)]
        print(f"| {m} | " + " | ".join(cells) + " |")


def _twin(ds, twin, level: float, ratios) -> None:
    """Fine-tuned clean MSE (mean over seeds) under ``ds``'s noise at ``level`` and under the twin's one level."""
    t_level = float(twin["noise"].values[0])
    for arch in ds["arch"].values:
        print(f"\n### {arch}, fine-tuned clean MSE: {noise_kind(ds)} {level:g} / {noise_kind(twin)} {t_level:g} "
              f"(mean over seeds)\n")
        print("| method | " + " | ".join(f"{r:g}" for r in ratios) + " |")
        print("|---|" + "---|" * len(ratios))
        for m in ds["method"].values:
            cells = []
            for r in ratios:
                at = {"arch": arch, "method": m, "ratio": r}
                a = float(reached(ds, METRIC).sel(at).sel(noise=level, stage="finetuned").mean("seed"))
                b = float(reached(twin, METRIC).sel(at).sel(noise=t_level, stage="finetuned").mean("seed"))
                cells.append(f"{a:.3g} / {b:.3g}")
            print(f"| {m} | " + " | ".join(cells) + " |")
        a = float(ds[f"dense_{METRIC}"].sel({"arch": arch, "noise": level}).mean())
        b = float(twin[f"dense_{METRIC}"].sel({"arch": arch, "noise": t_level}).mean())
        print(f"| dense | " + " | ".join(f"{a:.3g} / {b:.3g}" for _ in ratios) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="the study's output folder, or its results.nc")
    ap.add_argument("--ratios", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    ap.add_argument("--stages", nargs="+", default=["finetuned", "pruned"])
    ap.add_argument("--twin", type=Path, default=None, help="the Gaussian twin's output folder or results.nc")
    ap.add_argument("--twin-level", type=float, default=0.1, help="the level of equal variance in the main study")
    args = ap.parse_args()
    ds = read_dataset(args.folder if args.folder.is_file() else args.folder / "results.nc")
    if args.twin is not None:
        twin = read_dataset(args.twin if args.twin.is_file() else args.twin / "results.nc")
        _twin(ds, twin, args.twin_level, args.ratios)
        return
    for arch in ds["arch"].values:
        print(f"\n## {arch}")
        _dense(ds, arch)
        for stage in args.stages:
            for ratio in args.ratios:
                _cost(ds, arch, ratio, stage)


if __name__ == "__main__":
    main()
