"""Pruning schedules in studies: ``[prune.schedule]`` in a case file, run by ``sciprune run`` and
``sciprune sweep`` through one procedure (:func:`sciprune.engine.prune_and_train`)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import tiny_case
from malformed import assert_user_error, invoke, snapshot

from sciprune.config import load_case
from sciprune.pipeline import run_case
from sciprune.results import read_dataset
from sciprune.sweep import run_sweep

PRUNE = {"methods": ["gradient", "magnitude"], "ratios": [0.5, 0.8]}


pytestmark = pytest.mark.usefixtures("no_figures")


@pytest.fixture(scope="module")
def data(tiny_pdebench):
    return tiny_pdebench


def _study(tmp_path, data, name, schedule=None, engine=run_case):
    prune = dict(PRUNE, **({"schedule": schedule} if schedule else {}))
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_case(tmp_path / name, data, name=name, prune=prune, train={"epochs": 20},
                              finetune={"epochs": 3}))
    return read_dataset(engine(load_case(path), show_progress=False, echo=lambda s: None))


def _metrics(ds):
    return [v for v in ds.data_vars if "method" in ds[v].dims]


def test_one_step_schedule_equals_one_shot_and_multi_step_rescores(tmp_path, data):
    one_shot = _study(tmp_path, data, "one")
    one_step = _study(tmp_path, data, "step1", {"kind": "multi-step", "steps": 1})
    for v in _metrics(one_shot):
        np.testing.assert_array_equal(one_step[v].values, one_shot[v].values, err_msg=v)
    three = _study(tmp_path, data, "step3", {"kind": "multi-step", "steps": 3, "spacing": "geometric"})
    np.testing.assert_array_equal(three["sparsity"].values, one_shot["sparsity"].values)  # exact targets
    mag = dict(method="magnitude")  # magnitude's scores ignore the other weights: n steps == one step
    for v in _metrics(one_shot):
        np.testing.assert_array_equal(three[v].sel(mag).values, one_shot[v].sel(mag).values, err_msg=v)
    grad = dict(method="gradient", stage="pruned")  # re-scored at the partly pruned network: differs
    assert not np.array_equal(three["test_mse"].sel(grad).values, one_shot["test_mse"].sel(grad).values)
    assert "multi-step" in three.attrs["case"]


def test_sweep_runs_the_schedule_as_run_does(tmp_path, data):
    schedule = {"kind": "multi-step", "steps": 3, "spacing": "linear"}
    run = _study(tmp_path, data, "r", schedule)
    sweep = _study(tmp_path, data, "s", schedule, engine=run_sweep)
    for v in _metrics(run):
        if "stage" in run[v].dims:  # pruning is deterministic; fine-tuning as an ensemble rounds differently
            np.testing.assert_array_equal(sweep[v].sel(stage="pruned").values, run[v].sel(stage="pruned").values)
            np.testing.assert_allclose(sweep[v].values, run[v].values, rtol=1e-8, err_msg=v)


@pytest.mark.parametrize("schedule,needle", [
    ({"kind": "cubic", "n_updates": 3, "every": 2}, "last mask update is at optimiser step 6"),
    ({"kind": "cubic", "n_updates": 1, "every": 1, "final": 0.5}, "leave final unset"),
    ({"kind": "iterative", "fraction": 0.2}, "budget_epochs"),
    ({"kind": "iterative", "fraction": 1.5, "budget_epochs": 1}, "fraction"),
    ({"kind": "multi-step", "steps": 0}, "steps"),
    ({"kind": "multi-step", "steps": 2, "spacing": "log"}, "spacing"),
    ({"kind": "gradual"}, "gradual"),
    ({"kind": "multi-step", "steps": 2, "every": 3}, "every"),
])
def test_bad_schedule_in_a_case_is_one_line_before_any_work(tmp_path, data, schedule, needle):
    path = tmp_path / "bad.toml"
    path.write_text(tiny_case(tmp_path / "out", data, prune=dict(PRUNE, schedule=schedule)))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), "prune.schedule", needle, watch=(tmp_path,),
                          before=before)
