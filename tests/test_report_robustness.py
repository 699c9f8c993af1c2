"""The noise-robustness report: verdicts on synthetic studies with a known winner, tie and crossover;
the statistics against scipy and plain numpy; figures, tables and CSV; the same tables from ``run`` and
``sweep``; a single noise level; bad tolerances refused."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings, strategies as st
from malformed import assert_user_error, invoke, snapshot

from sciprune.report import report
from sciprune.results import write_dataset
from sciprune.robustness import crossovers, paired_bootstrap, prune_within, recommend, sign_test

DIMS = ("arch", "noise", "seed", "method", "ratio", "stage")


def study(errors: dict, *, levels=(0.0, 0.05), ratios=(0.5,), seeds=5, dense=None, attrs=None) -> xr.Dataset:
    """A results Dataset with one architecture whose ``test_mse_clean`` is ``errors[method](level, ratio,
    seed)`` at both stages (+10% just pruned), ``test_mse`` = it + level^2 / 3, dense = ``dense(level, seed)``."""
    methods = list(errors)
    coords = {"arch": ["a"], "noise": list(levels), "seed": list(range(seeds)), "method": methods,
              "ratio": list(ratios), "stage": ["pruned", "finetuned"]}
    v = np.array([[[[[[errors[m](lvl, r, s) * (1.1 if stage == "pruned" else 1.0) for stage in coords["stage"]]
                      for r in ratios] for m in methods] for s in coords["seed"]] for lvl in levels]])
    dense = dense or (lambda lvl, s: 1.0 + 0.01 * s)
    d = np.array([[[dense(lvl, s) for s in coords["seed"]] for lvl in levels]])
    noise_var = np.asarray(levels)[None, :, None] ** 2 / 3
    ds = xr.Dataset({"test_mse_clean": (DIMS, v), "test_mse": (DIMS, v + noise_var[..., None, None, None]),
                     "dense_test_mse_clean": (DIMS[:3], d), "dense_test_mse": (DIMS[:3], d + noise_var)}, coords=coords)
    ds.attrs.update(attrs or {})
    return ds


def _seedwise(s: int) -> float:
    return 1.0 + 0.1 * s  # seeds differ far more than the methods do: only pairing tells them apart


def _cell(rows, **where) -> dict:
    (row,) = [r for r in rows if all(r[k] == v for k, v in where.items())]
    return row


def test_known_winner_is_named_and_distinguishable():
    ds = study({"slow": lambda l, r, s: _seedwise(s) * 1.05, "best": lambda l, r, s: _seedwise(s),
                "worst": lambda l, r, s: _seedwise(s) * 1.5})
    row = _cell(recommend(ds, "test_mse_clean"), stage="finetuned", noise=0.05)
    assert row["verdict"] == row["winner"] == "best" and row["next"] == "slow"
    assert row["ci_low"] > 0 and row["tied"] == ()
    assert row["margin"] == pytest.approx(0.05 * np.mean([_seedwise(s) for s in range(5)]), rel=1e-12)
    assert row["sign_p"] == pytest.approx(2 / 32)  # worse on all 5 seeds: the smallest two-sided p-value


def test_known_tie_is_reported_as_a_tie():
    wobble = [0.02, -0.02, 0.02, -0.02, 0.004]  # mean 0.0008 > 0 but of either sign seed by seed
    ds = study({"a": lambda l, r, s: _seedwise(s), "b": lambda l, r, s: _seedwise(s) + wobble[s],
                "c": lambda l, r, s: _seedwise(s) + 0.5})
    row = _cell(recommend(ds, "test_mse_clean"), stage="finetuned", noise=0.0)
    assert row["verdict"] == "tie: a, b" and row["winner"] == "" and row["tied"] == ("b",)
    assert row["ci_low"] < 0 < row["ci_high"]


def test_accuracy_higher_is_better():
    ds = study({"low": lambda l, r, s: 0.5 + 0.01 * s, "high": lambda l, r, s: 0.9 + 0.01 * s})
    ds = ds.rename(test_mse_clean="test_accuracy")
    row = _cell(recommend(ds, "test_accuracy"), stage="finetuned", noise=0.0)
    assert row["winner"] == "high" and row["margin"] == pytest.approx(0.4) and row["ci_low"] > 0


def test_too_few_seeds_and_incomplete_methods():
    ds = study({"a": lambda l, r, s: 1.0 + s, "b": lambda l, r, s: 2.0 + s}, seeds=2)
    assert {r["verdict"] for r in recommend(ds, "test_mse_clean")} == {"too few seeds"}
    ds = study({"a": lambda l, r, s: 1.0 + s, "b": lambda l, r, s: 2.0 + s, "nan": lambda l, r, s: 0.1 if s else np.nan})
    row = _cell(recommend(ds, "test_mse_clean"), stage="finetuned", noise=0.0)
    assert row["winner"] == "a"  # a method with a missing seed is not compared on fewer seeds


def crossing() -> xr.Dataset:
    """'sharp' wins at low noise, 'smooth' from noise 0.1 on, each by 20% on every seed."""
    return study({"sharp": lambda l, r, s: _seedwise(s) * (1.0 if l < 0.1 else 1.2),
                  "smooth": lambda l, r, s: _seedwise(s) * (1.2 if l < 0.1 else 1.0)}, levels=(0.0, 0.02, 0.1, 0.2),
                 attrs={"case": '{"name": "x", "noise": {"kind": "uniform", "levels": [0, 0.02, 0.1, 0.2]}}',
                        "field_rms": 0.5})


def test_crossover_found_between_the_right_levels(tmp_path, no_robustness_figures):
    rows = recommend(crossing(), "test_mse_clean")
    assert [r["winner"] for r in rows if r["stage"] == "finetuned"] == ["sharp", "sharp", "smooth", "smooth"]
    moves = crossovers(rows)
    assert [(m["stage"], m["below"], m["above"], m["before"], m["after"], m["clear"]) for m in moves] == [
        ("pruned", 0.02, 0.1, "sharp", "smooth", True), ("finetuned", 0.02, 0.1, "sharp", "smooth", True)]
    text = report(write_dataset(crossing(), tmp_path / "results.nc")).read_text()
    assert "- ratio 0.5: sharp at noise 0.02, smooth at noise 0.1 (both distinguishable)" in text


# --- the statistics against references ------------------------------------------------------------

def _bootstrap_reference(d: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    """The plain loop: one resample of the seeds at a time, its mean, then the 2.5% and 97.5% quantiles."""
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for b in range(resamples):
        means[b] = np.mean(d[rng.integers(0, len(d), size=len(d))])
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=8), st.integers(0, 2**31))
def test_bootstrap_equals_a_plain_loop_and_is_reproducible(values, seed):
    d = np.array(values)
    got = paired_bootstrap(d, resamples=1000, seed=seed)
    assert got == pytest.approx(_bootstrap_reference(d, 1000, seed), rel=1e-12, abs=1e-12)  # summation order only
    assert got == paired_bootstrap(d, resamples=1000, seed=seed)
    lo, hi = paired_bootstrap(np.stack([d, -d], axis=1), resamples=1000, seed=seed)  # columns share the resamples
    assert (lo[0], hi[0]) == pytest.approx(got, abs=1e-12) and (lo[1], hi[1]) == pytest.approx((-got[1], -got[0]), abs=1e-12)
    assert d.min() - 1e-12 <= got[0] <= got[1] <= d.max() + 1e-12


def test_bootstrap_agrees_with_scipy_percentile_interval():
    from scipy.stats import bootstrap

    d = np.array([0.3, -0.1, 0.5, 0.2, 0.05, 0.4, -0.2])
    ours = paired_bootstrap(d, resamples=20_000, seed=1)
    ref = bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", rng=np.random.default_rng(2)).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=0.02)  # two independent draws: Monte-Carlo error only


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([-1.5, -0.2, 0.0, 0.3, 2.0]), min_size=1, max_size=12))
def test_sign_test_equals_binomtest_and_the_binomial_sum(values):
    from scipy.stats import binomtest

    d = np.array(values)
    n, k = int(np.count_nonzero(d)), int((d > 0).sum())
    if n == 0:
        assert sign_test(d) == 1.0
        return
    assert sign_test(d) == binomtest(k, n, 0.5).pvalue
    # two-sided, p = 1/2: both tails at least as extreme as k
    tail = sum(math.comb(n, j) for j in range(n + 1) if abs(j - n / 2) >= abs(k - n / 2)) / 2**n
    assert sign_test(d) == pytest.approx(min(1.0, tail), rel=1e-12)


def test_prune_within_matches_a_loop_and_stops_at_the_first_miss():
    ratios = (0.3, 0.5, 0.7, 0.9)
    curve = {0.3: 1.05, 0.5: 1.2, 0.7: 1.02, 0.9: 3.0}  # misses at 0.5, within again at 0.7: still 0.3
    ds = study({"bumpy": lambda l, r, s: curve[r] * (1.0 + 0.01 * s), "steady": lambda l, r, s: (1 + r / 10) * (1.0 + 0.01 * s),
                "bad": lambda l, r, s: 2.0}, ratios=ratios)
    ds["scratch_test_mse_clean"] = (("arch", "noise", "seed", "ratio"), np.full((1, 2, 5, 4), 1.01))
    rows = prune_within(ds, "test_mse_clean", 0.1)
    for row in rows:
        dense = ds["dense_test_mse_clean"].sel(noise=row["noise"]).values.mean()
        if row["method"] == "scratch":
            errs = ds["scratch_test_mse_clean"].sel(noise=row["noise"]).values[0].mean(axis=0)
        else:
            at = {"noise": row["noise"], "stage": row["stage"], "method": row["method"]}
            errs = ds["test_mse_clean"].sel(at).values[0].mean(axis=0)
        expected = float("nan")
        for r, e in zip(ratios, errs):
            if e > 1.1 * dense:
                break
            expected = r
        assert row["max_ratio"] == expected or (math.isnan(expected) and math.isnan(row["max_ratio"])), row
    fin = {r["method"]: r["max_ratio"] for r in rows if r["stage"] == "finetuned" and r["noise"] == 0.0}
    assert fin["bumpy"] == 0.3 and fin["steady"] == 0.9 and math.isnan(fin["bad"]) and fin["scratch"] == 0.9


# --- the report: figures, tables, CSV, SNR, a single level, bad tolerances -------------------------

def test_report_draws_robustness_figures_and_writes_the_tables(tmp_path):
    path = write_dataset(crossing(), tmp_path / "results.nc")
    text = report(path, tolerance=0.25).read_text()
    for metric in ("test_mse_clean", "test_mse"):
        for kind in ("", "_vs_dense"):
            assert (tmp_path / f"robustness_{metric}{kind}.png").stat().st_size > 1000
    rows = list(csv.DictReader((tmp_path / "recommendation.csv").open()))
    assert len(rows) == 2 * 4  # stage x noise x ratio
    assert [r["winner"] for r in rows if r["stage"] == "finetuned"] == ["sharp", "sharp", "smooth", "smooth"]
    reach = list(csv.DictReader((tmp_path / "tolerance.csv").open()))
    assert {r["tolerance"] for r in reach} == {"0.25"}
    snr = 0.5 * math.sqrt(3) / 0.02  # rms(u) / (a / sqrt(3))
    assert f"noise 0.02 (SNR {snr:.3g})" in text and "noise 0 (SNR ∞)" in text and "rms(u) / (a / sqrt(3))" in text
    assert "### How far can I prune: a, fine-tuned (tolerance 0.25)" in text


def test_snr_kinds():
    from sciprune.report_robustness import snr

    ds = crossing()
    assert snr(ds.assign_attrs(field_rms=None)) is None
    gauss = ds.assign_attrs(case='{"noise": {"kind": "gaussian"}}')
    np.testing.assert_allclose(snr(gauss)[1:], 0.5 / np.array([0.02, 0.1, 0.2]), rtol=1e-15)
    rel = ds.assign_attrs(case='{"noise": {"kind": "relative-gaussian"}}', field_rms=None)
    assert snr(rel)[0] == np.inf and snr(rel)[2] == pytest.approx(10.0)


def test_without_field_rms_the_axis_is_the_level_and_report_says_so(tmp_path, no_robustness_figures):
    ds = crossing()
    del ds.attrs["field_rms"]
    text = report(write_dataset(ds, tmp_path / "results.nc")).read_text()
    assert "no signal-to-noise ratio is shown" in text and "SNR" not in text.split("## Noise robustness")[1].split("\n\n", 2)[2]


def test_single_noise_level_still_reports_and_says_why_no_robustness_figures(tmp_path):
    ds = crossing().isel(noise=[1])
    text = report(write_dataset(ds, tmp_path / "results.nc")).read_text()
    assert text.startswith("# Study report: x") and "## a, fine-tuned" in text  # the ranking report is there
    assert "The robustness figures need two noise levels or more; this study has one (noise 0.02)." in text
    assert "### Which method: a, fine-tuned" in text and "| 0.5 | **sharp** (+20%) |" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranking.nc", "report.md", "report_test_mse_clean_vs_ratio.png",
                                                           "results.nc"]


@pytest.mark.parametrize("value", ["0", "-1", "abc", "inf", "nan", "-inf"])
def test_bad_tolerance_one_line_exit_2_nothing_written(tmp_path, value):
    path = write_dataset(crossing().isel(noise=[0]), tmp_path / "in" / "results.nc")
    before = snapshot(tmp_path)
    assert_user_error(invoke(["report", path, "--out", tmp_path / "out", "--tolerance", value]), "--tolerance",
                      watch=(tmp_path,), before=before)


# --- run and sweep of one tiny case: the same tables --------------------------------------------------

def test_run_and_sweep_give_the_same_tables(tmp_path, tiny_pdebench, no_figures, no_robustness_figures):
    from helpers import tiny_case

    import sciprune.pipeline
    from sciprune.config import load_case
    from sciprune.sweep import run_sweep

    texts, tables = [], []
    for engine in ("run", "sweep"):
        case = tmp_path / f"{engine}.toml"
        case.write_text(tiny_case(tmp_path / engine, tiny_pdebench, seeds=[0, 1, 2], noise={"levels": [0.0, 0.05]},
                                  prune={"methods": ["magnitude", "random"], "ratios": [0.5]}, train={"epochs": 2}))
        go = sciprune.pipeline.run_case if engine == "run" else run_sweep
        results = go(load_case(case), show_progress=False, echo=lambda s: None)
        texts.append(report(results, tmp_path / f"{engine}_report").read_text().split("## Noise robustness")[1])
        tables.append({n: list(csv.DictReader((tmp_path / f"{engine}_report" / n).open()))
                       for n in ("recommendation.csv", "tolerance.csv")})
    assert texts[0] == texts[1]
    for name in tables[0]:
        assert len(tables[0][name]) == len(tables[1][name]) > 0
        for a, b in zip(tables[0][name], tables[1][name]):
            assert a.keys() == b.keys()
            for k in a:  # numbers to 6 digits (sweep's fine-tuning rounds differently, rtol 1e-7), labels exactly
                try:
                    assert float(a[k]) == pytest.approx(float(b[k]), rel=1e-5, nan_ok=True), (name, k)
                except ValueError:
                    assert a[k] == b[k], (name, k)


def test_a_variant_that_did_not_reach_the_ratio_is_left_out(tmp_path, no_robustness_figures):
    """LOBSTER thresholded to a ratio may stop short: its (better) error at a sparsity it did not reach
    must not win that ratio's cell, nor count as reaching it within the tolerance."""
    ds = study({"short": lambda l, r, s: _seedwise(s) * 0.5, "full": lambda l, r, s: _seedwise(s),
                "worse": lambda l, r, s: _seedwise(s) * 1.2}, ratios=(0.5, 0.9))
    sp = np.broadcast_to(np.asarray([0.5, 0.9])[None, None, None, None, :], (1, 2, 5, 3, 2)).copy()
    sp[:, :, :, 0, 1] = 0.6  # 'short' stopped at 0.6 of the 0.9 asked
    ds["sparsity"] = (DIMS[:5], sp)
    rows = recommend(ds, "test_mse_clean")
    assert _cell(rows, stage="finetuned", noise=0.05, ratio=0.5)["winner"] == "short"
    high = _cell(rows, stage="finetuned", noise=0.05, ratio=0.9)
    assert high["winner"] == "full" and high["short"] == ("short",)
    reach = {r["method"]: r["max_ratio"] for r in prune_within(ds, "test_mse_clean", 1.0)
             if r["stage"] == "finetuned" and r["noise"] == 0.05}
    assert reach == {"short": 0.5, "full": 0.9, "worse": 0.9}
    text = report(write_dataset(ds, tmp_path / "results.nc")).read_text()
    assert "Left out where they did not reach the ratio" in text and "short at 0.9" in text
