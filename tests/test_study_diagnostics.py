"""``[diagnostics]`` in studies: top Hessian eigenvalues, PSP norms and PSP-entropies of the dense and of
every final pruned network in ``results.nc``, from ``sciprune run`` and ``sciprune sweep``, equal to the
diagnostics computed by hand on the same networks (float64)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import tiny_case
from study_networks import rebuild

import sciprune
from sciprune.config import load_case
from sciprune.pipeline import load_task, make_model, run_case, train_config
from sciprune.results import read_dataset
from sciprune.study_diagnostics import network_diagnostics
from sciprune.sweep import run_sweep

DIAG = {"hessian_top": 3, "psp": True}


pytestmark = pytest.mark.usefixtures("no_figures")


@pytest.fixture(scope="module")
def data(tiny_pdebench):
    return tiny_pdebench


def _case(tmp_path, data, name, activation):
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_case(tmp_path / name, data, name=name, diagnostics=DIAG,
                              model={"widths": [6, 6], "activation": activation},
                              prune={"methods": ["magnitude"], "ratios": [0.5]}, train={"epochs": 6},
                              finetune={"epochs": 2}))
    return load_case(path)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_results_hold_the_diagnostics_of_every_network(tmp_path, data, activation):
    case = _case(tmp_path, data, f"d{activation}", activation)
    ds = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    t, dense, pruned = rebuild(case)
    at = {"arch": "model", "noise": 0.0, "seed": 0}
    for prefix, model, where in (("dense_", dense, at), ("", pruned, {**at, "method": "magnitude", "ratio": 0.5})):
        want = network_diagnostics(model, t, hessian_top=3, psp=True, seed=0)
        assert ds[f"{prefix}hessian_eig"].sel(where).values.tolist() == want["hessian_eig"]
        assert ds[f"{prefix}psp_norm"].sel(where).values.tolist() == want["psp_norm"]
        if activation == "relu":  # PSP-entropy is defined for ReLU networks only
            assert ds[f"{prefix}psp_pair_entropy"].sel(where).values.tolist() == want["psp_pair_entropy"]
        else:
            assert "psp_entropy" not in want and f"{prefix}psp_entropy" not in ds
    assert list(ds["eig"].values) == [1, 2, 3] and list(ds["layer"].values) == [1, 2]
    eig = ds["hessian_eig"].sel(at).values.ravel()
    assert np.all(np.diff(eig) <= 0)  # largest first


def test_sweep_gives_the_diagnostics_of_run(tmp_path, data):
    run = read_dataset(run_case(_case(tmp_path, data, "r", "relu"), show_progress=False, echo=lambda s: None))
    sweep = read_dataset(run_sweep(_case(tmp_path, data, "s", "relu"), show_progress=False, echo=lambda s: None))
    for v in ("hessian_eig", "dense_hessian_eig", "psp_norm", "psp_entropy", "psp_pair_entropy", "dense_psp_norm"):
        np.testing.assert_allclose(sweep[v].values, run[v].values, rtol=1e-6, err_msg=v)


def _line_case(tmp_path, data, name):
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_case(tmp_path / name, data, name=name, diagnostics={"lines": [["magnitude", "gradient"]],
                                                                              "line_points": 5},
                              model={"widths": [6, 6]}, prune={"methods": ["magnitude", "gradient"], "ratios": [0.5]},
                              train={"epochs": 6}, finetune={"epochs": 2}))
    return load_case(path)


def test_loss_lines_between_variants_in_run_and_sweep(tmp_path, data):
    from sciprune.diagnostics import loss_line

    case = _line_case(tmp_path, data, "l")
    run = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    loaded = load_task(case, 0.0, 0, device="cpu", dtype=torch.float64)
    t = loaded.task
    dense = make_model(case.model, t.in_features, t.out_features, 0, device="cpu", dtype=torch.float64)
    sciprune.fit(dense, t, train_config(case.train, 0))
    ends = []
    for method in ("magnitude", "gradient"):
        m = copy.deepcopy(dense)
        sciprune.prune(m, method, 0.5, t, seed=0)
        sciprune.fit(m, t, train_config(case.finetune, 0))
        ends.append(m)
    want = loss_line(*ends, (t.X_train, t.Y_train), n_points=5, test_data=(t.X_test, t.Y_test))
    at = {"arch": "model", "noise": 0.0, "seed": 0, "pair": "magnitude->gradient", "ratio": 0.5}
    assert run["line_train_loss"].sel(at).values.tolist() == want["train_loss"].values.tolist()
    assert run["line_test_loss"].sel(at).values.tolist() == want["test_loss"].values.tolist()
    assert list(run["alpha"].values) == [0.0, 0.25, 0.5, 0.75, 1.0]

    scase = _line_case(tmp_path, data, "ls")
    sweep = read_dataset(run_sweep(scase, show_progress=False, echo=lambda s: None))
    np.testing.assert_allclose(sweep["line_train_loss"].values, run["line_train_loss"].values, rtol=1e-7)
    # the second network's record gone: recomputed with the first trained again, the first's record kept
    runs = sorted((tmp_path / "ls" / "sweep" / "runs").glob("*.json"))
    import json

    recs = {p: json.loads(p.read_text()) for p in runs}
    second = next(p for p, r in recs.items() if r.get("method") == "gradient")
    first = next(p for p, r in recs.items() if r.get("method") == "magnitude")
    kept = first.read_bytes()
    second.unlink()
    again = read_dataset(run_sweep(scase, show_progress=False, echo=lambda s: None))
    assert first.read_bytes() == kept
    np.testing.assert_allclose(again["line_train_loss"].values, sweep["line_train_loss"].values, rtol=1e-9)


def test_a_line_must_join_two_variants_of_the_case(tmp_path, data):
    from malformed import assert_user_error, invoke

    path = tmp_path / "bad.toml"
    path.write_text(tiny_case(tmp_path / "out", data, diagnostics={"lines": [["magnitude", "nothing"]]}))
    assert_user_error(invoke(["run", path, "--quiet"]), "diagnostics.lines", "two different variants")
