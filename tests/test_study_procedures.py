"""Schedules that train between or during their steps (iterative, cubic) in ``sciprune run`` and
``sciprune sweep``, and the per-step records a case keeps (``[prune] keep_steps``).

The study procedure (:func:`sciprune.engine.prune_and_train`) is checked against the library calls a
user would write by hand (``prune_scheduled`` with ``train_between``, ``fit`` with
``GradualPruning``) on the same dense network, in float64: the same numbers exactly.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import pytest
from helpers import tiny_case
from malformed import assert_user_error, invoke, snapshot

import sciprune
from sciprune.config import load_case
from sciprune.pipeline import evaluate, load_task, make_model, run_case, train_config
from sciprune.results import read_dataset
from sciprune.schedules import parse_schedule
from sciprune.sweep import run_sweep

PRUNE = {"methods": ["gradient", "magnitude"], "ratios": [0.5, 0.8]}
ITERATIVE = {"kind": "iterative", "fraction": 0.5, "budget_epochs": 2}
CUBIC = {"kind": "cubic", "n_updates": 3, "every": 2, "start_step": 1}


pytestmark = pytest.mark.usefixtures("no_figures")


@pytest.fixture(scope="module")
def data(tiny_pdebench):
    return tiny_pdebench


def _case(tmp_path, data, name, **prune):
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_case(tmp_path / name, data, name=name, prune=dict(PRUNE, **prune), train={"epochs": 20},
                              finetune={"epochs": 4}))
    return load_case(path)


def _study(case, engine=run_case, echo=lambda s: None):
    return read_dataset(engine(case, show_progress=False, echo=echo))


def _dense(case):
    """The dense network of the case's first block, trained as ``sciprune run`` trains it."""
    import torch

    loaded = load_task(case, 0.0, 0, device="cpu", dtype=torch.float64)
    t = loaded.task
    dense = make_model(case.model, t.in_features, t.out_features, 0, device="cpu", dtype=torch.float64)
    sciprune.fit(dense, t, train_config(case.train, 0))
    return dense, loaded


def _sel(ds, method, ratio, **more):
    return {"arch": "model", "noise": 0.0, "seed": 0, "method": method, "ratio": ratio, **more}


def test_iterative_study_equals_prune_scheduled_with_training_between(tmp_path, data):
    case = _case(tmp_path, data, "it", schedule=ITERATIVE, keep_steps="all")
    ds = _study(case)
    dense, loaded = _dense(case)
    finetune = train_config(case.finetune, 0)
    between = replace(finetune, epochs=ITERATIVE["budget_epochs"])
    for method in PRUNE["methods"]:
        for ratio in PRUNE["ratios"]:
            model = copy.deepcopy(dense)
            reports = sciprune.prune_scheduled(model, method, ratio, loaded.task, schedule=ITERATIVE, seed=0,
                                               train_between=lambda m, k: sciprune.fit(m, loaded.task, between))
            pruned = evaluate(model, loaded)
            sciprune.fit(model, loaded.task, finetune)
            done = evaluate(model, loaded)
            at = _sel(ds, method, ratio)
            assert ds["test_mse"].sel({**at, "stage": "pruned"}).item() == pruned["test_mse"]
            assert ds["test_mse"].sel({**at, "stage": "finetuned"}).item() == done["test_mse"]
            n = len(reports)
            steps = ds["step_sparsity"].sel(at).values
            np.testing.assert_array_equal(steps[:n], [r.achieved for r in reports])
            assert np.isnan(steps[n:]).all() and steps[n - 1] == ds["sparsity"].sel(at).item()
            assert np.all(np.diff(steps[:n]) > 0)
            # every level but the last is followed by budget_epochs of training, the last by the fine-tuning
            loss = ds["step_train_loss"].sel(at).values
            assert np.isfinite(loss[: n - 1, :2]).all() and np.isnan(loss[: n - 1, 2:]).all()
            assert np.isfinite(loss[n - 1]).all()
            trained = ds["step_test_mse"].sel({**at, "stage": "finetuned"}).values
            assert np.isfinite(trained[:n]).all() and trained[n - 1] == done["test_mse"]
    # 0.5 of what remains per level: one level to 0.5, three to 0.8 (0.5, 0.75, 0.8)
    assert ds.sizes["step"] == 3


def test_cubic_study_equals_fit_with_gradual_pruning(tmp_path, data):
    case = _case(tmp_path, data, "cu", schedule=CUBIC, keep_steps="all")
    ds = _study(case)
    dense, loaded = _dense(case)
    finetune = train_config(case.finetune, 0)
    for method in PRUNE["methods"]:
        for ratio in PRUNE["ratios"]:
            model = copy.deepcopy(dense)
            gp = sciprune.GradualPruning(method, ratio, loaded.task, schedule=CUBIC, compensate=None, seed=0)
            sciprune.fit(model, loaded.task, finetune, hooks=[gp])
            at = _sel(ds, method, ratio)
            assert ds["test_mse"].sel({**at, "stage": "finetuned"}).item() == evaluate(model, loaded)["test_mse"]
            np.testing.assert_array_equal(ds["step_sparsity"].sel(at).values, [r.achieved for r in gp.reports])
            assert ds["sparsity"].sel(at).item() == gp.reports[-1].achieved
            assert gp.reports[-1].pruned == round(ratio * gp.reports[-1].total)
            # the metrics at each mask update, recorded during the fine-tuning; only the last step is trained after
            assert np.isfinite(ds["step_test_mse"].sel({**at, "stage": "pruned"}).values).all()
            trained = ds["step_test_mse"].sel({**at, "stage": "finetuned"}).values
            assert np.isnan(trained[:-1]).all() and trained[-1] == ds["test_mse"].sel({**at, "stage": "finetuned"}).item()
    assert list(ds["step"].values) == [1, 2, 3, 4]  # n_updates + 1 updates


@pytest.mark.parametrize("schedule", [ITERATIVE, CUBIC], ids=["iterative", "cubic"])
def test_sweep_runs_iterative_and_cubic_as_run_does_and_both_resume(tmp_path, data, schedule):
    run = _study(_case(tmp_path, data, "r", schedule=schedule, keep_steps="all"))
    case = _case(tmp_path, data, "s", schedule=schedule, keep_steps="all")
    sweep = _study(case, run_sweep)
    assert set(sweep.data_vars) == set(run.data_vars) and sweep["step"].equals(run["step"])
    for v in run.data_vars:
        if "method" in run[v].dims:  # fine-tuning as an ensemble rounds differently from one fit
            np.testing.assert_allclose(sweep[v].values, run[v].values, rtol=1e-7, atol=1e-12, err_msg=v)
    said: list[str] = []
    again = _study(case, run_sweep, echo=said.append)
    assert all("recomputing" not in s for s in said) and any("0 to run" in s for s in said), said
    for v in sweep.data_vars:
        np.testing.assert_array_equal(again[v].values, sweep[v].values)
    said.clear()
    run_again = _study(_case(tmp_path, data, "r", schedule=schedule, keep_steps="all"), echo=said.append)
    assert not said and run_again.equals(run)


def test_kept_steps_of_a_multi_step_schedule(tmp_path, data):
    schedule = {"kind": "multi-step", "steps": 3, "spacing": "linear"}
    ds = _study(_case(tmp_path, data, "k", schedule=schedule, keep_steps=[1, 3]))
    assert list(ds["step"].values) == [1, 3] and ds.sizes["epoch"] == 4
    for ratio in PRUNE["ratios"]:
        at = _sel(ds, "gradient", ratio)
        targets = parse_schedule(schedule).targets(ratio)
        n = ds["dense_weights"].sel(arch="model", noise=0.0, seed=0).item()  # exact counts: floor(s n + 1/2)
        np.testing.assert_array_equal(ds["step_sparsity"].sel(at).values,
                                      [np.floor(targets[k] * n + 0.5) / n for k in (0, 2)])
        last = ds["step_test_mse"].sel({**at, "step": 3})
        assert last.sel(stage="pruned").item() == ds["test_mse"].sel({**at, "stage": "pruned"}).item()
        assert last.sel(stage="finetuned").item() == ds["test_mse"].sel({**at, "stage": "finetuned"}).item()
        first = ds["step_test_mse"].sel({**at, "step": 1})
        assert np.isfinite(first.sel(stage="pruned").item()) and np.isnan(first.sel(stage="finetuned").item())
        assert np.isnan(ds["step_train_loss"].sel({**at, "step": 1}).values).all()  # no training between multi-steps
        assert np.isfinite(ds["step_train_loss"].sel({**at, "step": 3}).values).all()
    plain = _study(_case(tmp_path, data, "p", schedule=schedule))
    assert "step" not in plain.dims and not any(v.startswith("step_") for v in plain.data_vars)
    for v in plain.data_vars:
        np.testing.assert_array_equal(plain[v].values, ds[v].values, err_msg=v)


@pytest.mark.parametrize("prune,key,needle", [
    ({"keep_steps": "some"}, "prune.keep_steps", "keep_steps must be"),
    ({"keep_steps": [0]}, "prune.keep_steps", "step numbers >= 1"),
    ({"keep_steps": [2, 2]}, "prune.keep_steps", "distinct"),
    ({"schedule": {"kind": "cubic", "n_updates": 2, "every": 1}, "keep_steps": "all"}, "finetune.patience",
     "unset finetune.patience"),
])
def test_bad_step_settings_are_one_line_before_any_work(tmp_path, data, prune, key, needle):
    path = tmp_path / "bad.toml"
    finetune = {"epochs": 4, "patience": 2} if key == "finetune.patience" else {"epochs": 4}
    path.write_text(tiny_case(tmp_path / "out", data, prune=dict(PRUNE, **prune), finetune=finetune))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), key, needle, watch=(tmp_path,), before=before)
