"""``sciprune report``: rankings against a plain per-cell sort, figures and summary written, bad files refused."""

import itertools

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from sciprune.cli import cli
from sciprune.report import ranking, report
from sciprune.results import write_dataset


def _results(seed=0):
    rng = np.random.default_rng(seed)
    shape = (2, 3, 3, 4, 5, 2)  # arch, noise, seed, method, ratio, stage
    coords = {"arch": ["a", "b"], "noise": [0.0, 0.005, 0.05], "seed": [0, 1, 2],
              "method": ["ec", "magnitude", "random", "gradient"], "ratio": [0.1, 0.3, 0.5, 0.7, 0.9],
              "stage": ["pruned", "finetuned"]}
    dims = tuple(coords)
    ds = xr.Dataset({
        "test_mse_clean": (dims, rng.lognormal(size=shape)),
        "test_accuracy": (dims, rng.uniform(size=shape)),
        "dense_test_mse_clean": (dims[:3], rng.lognormal(size=shape[:3])),
        "scratch_test_mse_clean": (dims[:3] + ("ratio",), rng.lognormal(size=shape[:3] + (5,))),
    }, coords=coords)
    ds["test_mse_clean"][0, 1, 2, 3, 4, 1] = np.nan  # one unfinished run
    return ds


@pytest.mark.parametrize("metric", ["test_mse_clean", "test_accuracy"])
def test_ranking_matches_a_plain_sort(metric):
    ds = _results()
    r = ranking(ds, metric)
    lower = metric != "test_accuracy"
    for a, n, q, s in itertools.product(range(2), range(3), range(5), range(2)):
        means = ds[metric].values[a, n, :, :, q, s].mean(axis=0)  # NaN propagates: that method ranks last
        key = np.where(np.isnan(means), np.inf, means if lower else -means)
        expected = [1 + int((key < k).sum()) for k in key]
        assert r["rank"].values[a, n, :, q, s].tolist() == expected


def test_report_writes_figures_ranking_and_summary(tmp_path):
    path = write_dataset(_results(), tmp_path / "results.nc")
    md = report(path)
    text = md.read_text()
    assert "## a, fine-tuned" in text and "## b, just pruned" in text and "cells won" in text
    for arch in "ab":
        assert (tmp_path / f"report_test_mse_clean_vs_ratio_{arch}.png").stat().st_size > 1000
    assert (tmp_path / "ranking.nc").exists()


def test_report_cli_and_errors(tmp_path):
    path = write_dataset(_results(), tmp_path / "results.nc")
    res = CliRunner().invoke(cli, ["report", str(path), "--out", str(tmp_path / "rep"), "--metric", "test_accuracy"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "report.md").exists()
    for args, needle in [([str(tmp_path / "none.nc")], "no such results file"),
                         ([str(path), "--metric", "bogus"], "metric must be one of"),
                         ([str(write_dataset(xr.Dataset({"x": ("i", [1.0])}), tmp_path / "other.nc"))], "not a sciprune study")]:
        res = CliRunner().invoke(cli, ["report", *args])
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output


def test_field_panels_wrap_into_rows(tmp_path):
    import matplotlib.image as mpimg

    from sciprune.plots import plot_fields

    x, t = np.linspace(0, 1, 16), np.linspace(0, 500, 11)
    fields = {f"panel {i}": np.outer(t, x) * i for i in range(7)}
    wide = mpimg.imread(plot_fields(fields, x, t, tmp_path / "a.png", columns=7))
    wrapped = mpimg.imread(plot_fields(fields, x, t, tmp_path / "b.png", columns=3))
    assert wrapped.shape[0] > wide.shape[0] and wrapped.shape[1] < wide.shape[1]  # 3 rows of 3, not 1 row of 7


def test_one_seed_reports_no_spread(tmp_path):
    path = write_dataset(_results().isel(seed=[0]), tmp_path / "results.nc")
    text = report(path).read_text()
    assert "±" not in text and "no spread with one seed" in text
