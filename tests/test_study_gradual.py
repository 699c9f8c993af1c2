"""``[prune.procedures.NAME]`` in studies: lottery tickets and rewinding, gradual magnitude pruning from the
initial weights, and the re-initialisation and random-mask controls, through ``sciprune run`` and
``sciprune sweep``. Checked in float64 against the library calls a user would write by hand on the same
dense training (``sciprune.lottery_ticket``, ``sciprune.fit`` with ``GradualPruning``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import assert_sweep_equals_run, tiny_case
from malformed import assert_user_error, invoke, snapshot

import sciprune
from sciprune.config import load_case
from sciprune.pipeline import evaluate, load_task, make_model, run_case, train_config
from sciprune.results import read_dataset
from sciprune.sweep import run_sweep

ITER = {"kind": "iterative", "fraction": 0.5, "budget_epochs": 0}
CUBIC = {"kind": "cubic", "n_updates": 3, "every": 4, "start_step": 2}
PROCEDURES = {
    "lottery": {"schedule": ITER, "rewind": 0},
    "rewound": {"schedule": ITER, "rewind": 5},
    "reinit": {"control": "reinit", "of": "lottery"},
    "randmask": {"control": "random-mask", "of": "lottery"},
    "gmp": {"schedule": CUBIC, "start": "init"},
}
RATIOS = [0.5, 0.8]


pytestmark = pytest.mark.usefixtures("no_figures")


@pytest.fixture(scope="module")
def data(tiny_pdebench):
    return tiny_pdebench


def _case(tmp_path, data, name, procedures=PROCEDURES, **extra):
    path = tmp_path / f"{name}.toml"
    prune = {"methods": ["magnitude"], "ratios": RATIOS, "procedures": procedures, **extra}
    path.write_text(tiny_case(tmp_path / name, data, name=name, prune=prune, train={"epochs": 8},
                              finetune={"epochs": 3}, model={"widths": [8, 8]}))
    return load_case(path)


def _at(method, ratio):
    return {"arch": "model", "noise": 0.0, "seed": 0, "method": method, "ratio": ratio}


@pytest.fixture(scope="module")
def studies(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("g")
    run = read_dataset(run_case(_case(tmp, data, "r"), show_progress=False, echo=lambda s: None))
    case = _case(tmp, data, "s")
    sweep = read_dataset(run_sweep(case, show_progress=False, echo=lambda s: None))
    return tmp, case, run, sweep


def test_lottery_and_gmp_equal_the_library_by_hand(studies, data):
    tmp, case, run, _ = studies
    loaded = load_task(case, 0.0, 0, device="cpu", dtype=torch.float64)
    t = loaded.task
    train = train_config(case.train, 0)

    def init():
        return make_model(case.model, t.in_features, t.out_features, 0, device="cpu", dtype=torch.float64)

    for ratio in RATIOS:
        for name, k in (("lottery", 0), ("rewound", 5)):
            model = init()
            res = sciprune.lottery_ticket(model, t, train, target=ratio, fraction=0.5, rewind_step=k)
            got = run["test_mse"].sel({**_at(name, ratio), "stage": "finetuned"}).item()
            assert got == evaluate(model, loaded)["test_mse"], (name, ratio)
            assert run["sparsity"].sel(_at(name, ratio)).item() == res.levels[-1].report.achieved
        model = init()
        gp = sciprune.GradualPruning("magnitude", ratio, t, schedule=CUBIC, compensate=None, seed=0)
        sciprune.fit(model, t, train, hooks=[gp])
        assert run["test_mse"].sel({**_at("gmp", ratio), "stage": "finetuned"}).item() == evaluate(model, loaded)["test_mse"]
        assert run["sparsity"].sel(_at("gmp", ratio)).item() == gp.reports[-1].achieved


def test_controls_keep_the_tickets_sparsity_and_differ_from_it(studies):
    _, _, run, _ = studies
    for ratio in RATIOS:
        s = run["sparsity"].sel(_at("lottery", ratio)).item()
        assert run["sparsity"].sel(_at("reinit", ratio)).item() == s
        assert run["sparsity"].sel(_at("randmask", ratio)).item() == s
        ticket = run["test_mse"].sel({**_at("lottery", ratio), "stage": "finetuned"}).item()
        for control in ("reinit", "randmask"):
            assert run["test_mse"].sel({**_at(control, ratio), "stage": "finetuned"}).item() != ticket


def test_sweep_equals_run_and_resumes(studies):
    tmp, case, run, sweep = studies
    assert_sweep_equals_run(run, sweep)
    said: list[str] = []
    again = read_dataset(run_sweep(case, show_progress=False, echo=said.append))
    assert any("0 to run" in s for s in said) and not any("recomputing" in s for s in said), said
    for v in sweep.data_vars:
        np.testing.assert_array_equal(again[v].values, sweep[v].values)


@pytest.mark.parametrize("procedures,key,needle", [
    ({"c": {"control": "reinit"}}, "prune.procedures.c", "names the variant"),
    ({"c": {"control": "reinit", "of": "nothing"}}, "prune.procedures.c.of", "must name a variant of this case"),
    ({"l": {"schedule": ITER, "rewind": 0}, "c": {"control": "reinit", "of": "l"}, "d": {"control": "reinit", "of": "c"}},
     "prune.procedures.d.of", "not a control"),
    ({"g": {"start": "init"}}, "prune.procedures.g", "needs a cubic schedule"),
    ({"r": {"schedule": {"kind": "multi-step", "steps": 2}, "rewind": 0}}, "prune.procedures.r", "one-shot or iterative"),
    ({"r": {"schedule": dict(ITER, budget_epochs=2), "rewind": 0}}, "prune.procedures.r", "budget_epochs = 0"),
    ({"r": {"schedule": ITER, "rewind": 10_000}}, "prune.procedures.r", "beyond the training length"),
    ({"g": {"schedule": dict(CUBIC, every=1000), "start": "init"}}, "prune.procedures.g", "last mask update"),
    ({"r": {"rewind": -1}}, "prune.procedures.r.rewind", "greater than or equal to 0"),
])
def test_bad_procedures_are_one_line_before_any_work(tmp_path, data, procedures, key, needle):
    path = tmp_path / "bad.toml"
    path.write_text(tiny_case(tmp_path / "out", data, prune={"methods": ["magnitude"], "procedures": procedures}))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), key, needle, watch=(tmp_path,), before=before)
