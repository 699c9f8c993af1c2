"""``sciprune report`` on a study with ``[diagnostics]``: one figure and one table per quantity per
architecture and noise level, the tables' numbers equal to mean ± sample std over seeds computed here
from the results with NumPy, the old report unchanged without diagnostics, and diagnostics variables on
the wrong dimensions refused with one line (exit 2) before anything is written.

The results come from one tiny real study (a 1-6-6-1 ReLU network, two seeds, two methods, two ratios),
run once for the module."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from helpers import tiny_case
from malformed import assert_raises_user_error, assert_user_error, invoke, snapshot

from sciprune.report import report
from sciprune.results import read_dataset, write_dataset

DIAG_DIMS = ("eig", "layer", "linear", "batch", "pair", "alpha")
FIGURES = ["report_hessian_eig_vs_ratio.png", "report_loss_lines.png", "report_psp_entropy_vs_ratio.png",
           "report_psp_norm_vs_ratio.png", "report_psp_pair_entropy_vs_ratio.png", "report_kfac_radius_vs_ratio.png",
           "report_inference_us_vs_ratio.png"]
OLD = ["ranking.nc", "report.md", "report_test_mse_clean_vs_ratio.png"]


@pytest.fixture(scope="module")
def results(tmp_path_factory, tiny_pdebench) -> Path:
    """results.nc of a tiny study with every diagnostic (figures of ``sciprune run`` itself left out)."""
    import sciprune.pipeline
    from sciprune.config import load_case

    folder = tmp_path_factory.mktemp("study")
    case = folder / "case.toml"
    case.write_text(tiny_case(folder / "out", tiny_pdebench, name="diag", seeds=[0, 1],
                              diagnostics={"hessian_top": 2, "psp": True, "lines": [["magnitude", "gradient"]],
                                           "line_points": 5, "kfac": True, "inference": True},
                              model={"widths": [6, 6], "activation": "relu"},
                              prune={"methods": ["magnitude", "gradient"], "ratios": [0.5, 0.8]},
                              train={"epochs": 4}, finetune={"epochs": 1}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sciprune.pipeline, "_figures", lambda *args: None)
        return sciprune.pipeline.run_case(load_case(case), show_progress=False, echo=lambda s: None)


@pytest.fixture(scope="module")
def full(results, tmp_path_factory) -> tuple[xr.Dataset, Path]:
    """The study's results and the folder of its report (drawn once)."""
    out = tmp_path_factory.mktemp("report")
    report(results, out)
    return read_dataset(results), out


def _cell(values: np.ndarray) -> str:
    """'mean ± sample std' over the first axis (seeds), as the report formats them."""
    return f"{np.mean(values):.3g} ± {np.std(values, ddof=1):.3g}"


def _table(text: str, heading: str) -> dict[tuple[str, ...], list[str]]:
    """The Markdown table under the first heading containing ``heading``: row labels -> cells per ratio."""
    lines = text[text.index(heading):].splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    n_labels = sum(1 for c in header if not re.fullmatch(r"[0-9.e+-]+", c))
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in ln.strip("|").split("|")]
        rows[tuple(cells[:n_labels])] = cells[n_labels:]
    return rows


def test_every_quantity_gets_a_figure(full):
    _, out = full
    assert sorted(p.name for p in out.iterdir()) == sorted(OLD + FIGURES)
    for name in FIGURES:
        assert (out / name).stat().st_size > 5000
        assert f"]({name})" in (out / "report.md").read_text()


def test_tables_hold_mean_and_std_over_seeds(full):
    ds, out = full
    text = (out / "report.md").read_text()
    at = {"arch": "model", "noise": 0.0}
    methods, ratios = list(ds["method"].values), list(ds["ratio"].values)
    checks = {"`test_mse_clean`, fine-tuned": lambda m, r, lyr: ds["test_mse_clean"].sel(at).sel({"method": m, "ratio": r,
                                                                                          "stage": "finetuned"}),
              "(`hessian_eig`, eig = 1)": lambda m, r, lyr: ds["hessian_eig"].sel(at).sel({"method": m, "ratio": r, "eig": 1})}
    for name in ("psp_norm", "psp_entropy", "psp_pair_entropy"):
        checks[f"(`{name}`)"] = lambda m, r, lyr, name=name: ds[name].sel(at).sel({"method": m, "ratio": r, "layer": int(lyr)})
    checks["(`inference_us`)"] = lambda m, r, b: ds["inference_us"].sel(at).sel({"method": m, "ratio": r, "batch": b})
    # the network's K-FAC radius: the largest over its Linear layers, per seed
    checks["(`kfac_radius`)"] = lambda m, r, _: ds["kfac_radius"].sel(at).sel({"method": m, "ratio": r}).max("linear")
    inner = {"(`inference_us`)": "batch", "(`kfac_radius`)": None}
    for heading, pick in checks.items():
        table = _table(text, heading)
        dim = inner.get(heading, "layer" if "psp" in heading else None)
        keys = [(m, str(lbl)) for m in methods for lbl in ds[dim].values] if dim else [(m,) for m in methods]
        assert sorted(table) == sorted(keys), heading
        for key in keys:
            want = [_cell(pick(key[0], r, key[-1] if dim else None).values) for r in ratios]
            assert table[key] == want, (heading, key)
    lines = _table(text, "(`line_train_loss`, `line_test_loss`)")
    for split, var in (("training", "line_train_loss"), ("test", "line_test_loss")):
        v = ds[var].sel(at).sel(pair="magnitude->gradient").transpose("seed", "ratio", "alpha").values
        barrier = v.max(axis=2) - np.maximum(v[:, :, 0], v[:, :, -1])
        assert lines[("magnitude->gradient", split)] == [_cell(barrier[:, j]) for j in range(len(ratios))]
    dense = ds["dense_hessian_eig"].sel(at).sel(eig=1).values
    assert f"Dense network: {_cell(dense)}." in text
    assert f"Dense network: {_cell(ds['dense_kfac_radius'].sel(at).max('linear').values)}." in text
    us = ds["dense_inference_us"].sel(at)
    assert f"Dense network: batch one: {_cell(us.sel(batch='one').values)}, batch all: {_cell(us.sel(batch='all').values)}." in text


def test_without_diagnostics_the_report_is_as_before(full, tmp_path):
    ds, out = full
    old = ds.drop_vars([n for n in ds.data_vars if set(ds[n].dims) & set(DIAG_DIMS)]).drop_dims(DIAG_DIMS)
    report(write_dataset(old, tmp_path / "results.nc"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OLD + ["results.nc"])
    text, with_diag = (tmp_path / "report.md").read_text(), (out / "report.md").read_text()
    assert "Diagnostics" not in text and with_diag.startswith(text + "\n## Diagnostics: model, noise 0\n")
    name = "report_test_mse_clean_vs_ratio.png"
    assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def _stub_figures(monkeypatch) -> None:
    """Write a placeholder instead of drawing each figure (what is drawn is tested above)."""
    import sciprune.plots
    import sciprune.plots_diagnostics

    def stub(*args, **kwargs):
        path = Path(next(a for a in args if isinstance(a, (str, Path))))
        path.write_bytes(b"png")
        return path

    for mod, fn in ((sciprune.plots, "plot_loss_vs_ratio"), (sciprune.plots_diagnostics, "plot_quantity_vs_ratio"),
                    (sciprune.plots_diagnostics, "plot_loss_lines")):
        monkeypatch.setattr(mod, fn, stub)


def test_psp_entropy_of_a_non_relu_network_is_skipped_and_said(full, tmp_path, monkeypatch):
    ds, _ = full
    _stub_figures(monkeypatch)
    tanh = ds.assign_coords(arch=["tanh"])
    for name in ("psp_entropy", "psp_pair_entropy", "dense_psp_entropy", "dense_psp_pair_entropy"):
        tanh[name] = tanh[name] * np.nan  # what a study with a ReLU and a tanh architecture holds
    both = xr.concat([ds.assign_coords(arch=["relu"]), tanh], "arch")
    report(write_dataset(both, tmp_path / "results.nc"))
    files = {p.name for p in tmp_path.iterdir()}
    assert "report_psp_entropy_vs_ratio_relu.png" in files and "report_psp_norm_vs_ratio_tanh.png" in files
    assert not {"report_psp_entropy_vs_ratio_tanh.png", "report_psp_pair_entropy_vs_ratio_tanh.png"} & files
    text = (tmp_path / "report.md").read_text()
    assert "`psp_entropy`: no value for tanh, noise 0 (defined for ReLU networks only)" in text
    # a study of tanh networks only has no PSP-entropy variables at all
    only_tanh = ds.drop_vars(["psp_entropy", "psp_pair_entropy", "dense_psp_entropy", "dense_psp_pair_entropy"])
    report(write_dataset(only_tanh, tmp_path / "t" / "results.nc"))
    assert "defined for ReLU networks only" in (tmp_path / "t" / "report.md").read_text()
    assert not any("entropy" in p.name for p in (tmp_path / "t").iterdir())


def test_several_noise_levels_get_a_figure_each(full, tmp_path, monkeypatch):
    ds, _ = full
    _stub_figures(monkeypatch)
    two = xr.concat([ds, ds.assign_coords(noise=[0.05])], "noise")
    report(write_dataset(two, tmp_path / "results.nc"))
    files = {p.name for p in tmp_path.iterdir()}
    for level in ("0", "0.05"):
        assert {f"report_hessian_eig_vs_ratio_noise{level}.png", f"report_loss_lines_noise{level}.png"} <= files
        assert f"## Diagnostics: model, noise {level}" in (tmp_path / "report.md").read_text()


def _wrong(name: str, edit):
    def make(ds: xr.Dataset) -> xr.Dataset:
        return ds.assign({name: edit(ds[name])})
    return make


BAD = [
    ("eigenvalues summed away", _wrong("hessian_eig", lambda v: v.sum("eig")), ["'hessian_eig'", "dims"]),
    ("layer renamed", _wrong("psp_norm", lambda v: v.rename(layer="depth")), ["'psp_norm'", "dims"]),
    ("dense with methods", _wrong("dense_psp_entropy", lambda v: v.expand_dims(method=["x"])),
     ["'dense_psp_entropy'", "dims"]),
    ("line without alpha", _wrong("line_test_loss", lambda v: v.isel(alpha=0)), ["'line_test_loss'", "dims"]),
    ("text values", _wrong("psp_pair_entropy", lambda v: v.astype(str)), ["'psp_pair_entropy'", "numbers"]),
    ("repeated pair labels", lambda ds: ds.isel(pair=[0, 0]), ["'pair'", "unique"]),
    ("kfac over hidden layers", _wrong("kfac_radius", lambda v: v.rename(linear="layer")), ["'kfac_radius'", "dims"]),
    ("dense time per method", _wrong("dense_inference_us", lambda v: v.expand_dims(method=["x"])),
     ["'dense_inference_us'", "dims"]),
    ("repeated batch labels", lambda ds: ds.isel(batch=[0, 0]), ["'batch'", "unique"]),
    ("nan alpha", lambda ds: ds.assign_coords(alpha=[0.0, np.nan, 0.5, 0.75, 1.0]), ["'alpha'", "finite"]),
]


@pytest.mark.parametrize("edit, needles", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_diagnostics_on_wrong_dims_refused(full, edit, needles):
    from sciprune.report_diagnostics import check_diagnostics

    ds, _ = full
    assert_raises_user_error(lambda: check_diagnostics(edit(ds), Path("results.nc")), "results.nc", *needles)


def test_cli_refuses_wrong_dims_with_one_line_and_writes_nothing(full, tmp_path):
    ds, _ = full
    name, edit, needles = BAD[0]
    path = write_dataset(edit(ds), tmp_path / "in" / "results.nc")
    before = snapshot(tmp_path)
    assert_user_error(invoke(["report", path, "--out", tmp_path / "out"]), "results.nc", *needles,
                      "['arch', 'noise', 'seed', 'method', 'ratio', 'eig']", watch=(tmp_path,), before=before)
