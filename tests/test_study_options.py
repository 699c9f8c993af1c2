"""Criterion options per procedure (``[prune.procedures.NAME] options = {...}``): one method with several
settings side by side in one study (Laurent et al. 2020's locality grid).

Checked in float64 against the library a user would call by hand on the same dense training
(``sciprune.prune_scheduled`` / ``sciprune.fit`` with ``GradualPruning``, those options, then the
fine-tuning), through ``sciprune run`` and ``sciprune sweep``; the Planner scores each (method, options)
once; results keys do not move for a case without procedure options; bad options are one line, exit 2."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from helpers import assert_sweep_equals_run, tiny_case
from malformed import assert_user_error, invoke, snapshot

import sciprune
from sciprune.config import load_case
from sciprune.pipeline import evaluate, load_task, make_model, run_case, train_config
from sciprune.planner import Planner
from sciprune.results import read_dataset
from sciprune.sweep import run_sweep
from sciprune.sweep._grid import build_grid

MULTI = {"kind": "multi-step", "steps": 3, "spacing": "geometric"}
CUBIC = {"kind": "cubic", "n_updates": 3, "every": 2, "start_step": 1}
OPTIONS = {"qm": {"examples": 40}}  # [prune.options.qm]: used by the variants without options of their own
PROCEDURES = {
    "qm-small": {"method": "qm", "options": {"locality": 1e-3}},
    "qm-large": {"method": "qm", "options": {"locality": 30.0}},
    "qm-steps": {"method": "qm", "options": {"locality": 1e-2, "examples": 60}, "schedule": MULTI},
    "qm-plain-steps": {"method": "qm", "schedule": MULTI},
    "lm-cubic": {"method": "lm", "options": {"locality": 1e-2}, "schedule": CUBIC},
}
RATIOS = [0.5, 0.8]

pytestmark = pytest.mark.usefixtures("no_figures")


@pytest.fixture(scope="module")
def data(tiny_pdebench):
    return tiny_pdebench


def _case(tmp_path, data, name, procedures=PROCEDURES):
    path = tmp_path / f"{name}.toml"
    prune = {"methods": ["qm"], "ratios": RATIOS, "options": OPTIONS, "procedures": procedures}
    path.write_text(tiny_case(tmp_path / name, data, name=name, prune=prune, train={"epochs": 8},
                              finetune={"epochs": 3}, model={"widths": [8, 8]}))
    return load_case(path)


def _at(method, ratio, stage="finetuned"):
    return {"arch": "model", "noise": 0.0, "seed": 0, "method": method, "ratio": ratio, "stage": stage}


@pytest.fixture(scope="module")
def studies(tmp_path_factory, data):
    tmp = tmp_path_factory.mktemp("o")
    case = _case(tmp, data, "r")
    run = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    sweep = read_dataset(run_sweep(_case(tmp, data, "s"), show_progress=False, echo=lambda s: None))
    return case, run, sweep


@pytest.fixture(scope="module")
def dense(studies):
    """The study's dense network trained by hand (``sciprune.fit``) and its task."""
    case = studies[0]
    loaded = load_task(case, 0.0, 0, device="cpu", dtype=torch.float64)
    t = loaded.task
    model = make_model(case.model, t.in_features, t.out_features, 0, device="cpu", dtype=torch.float64)
    sciprune.fit(model, t, train_config(case.train, 0))
    return model, loaded


def _by_hand(case, dense, label, ratio):
    """The variant ``label`` at ``ratio`` as a user writes it: a copy of the dense network, then the library."""
    model, loaded = copy.deepcopy(dense[0]), dense[1]
    t = loaded.task
    spec = PROCEDURES.get(label, {"method": label})
    options = spec.get("options", OPTIONS.get(spec["method"], {}))
    finetune = train_config(case.finetune, 0)
    if spec.get("schedule") == CUBIC:
        gp = sciprune.GradualPruning(spec["method"], ratio, t, schedule=CUBIC, seed=0, **options)
        sciprune.fit(model, t, finetune, hooks=[gp])
        achieved = gp.reports[-1].achieved
        pruned = None
    else:
        reports = sciprune.prune_scheduled(model, spec["method"], ratio, t, schedule=spec.get("schedule", "one-shot"),
                                           seed=0, **options)
        achieved, pruned = reports[-1].achieved, evaluate(copy.deepcopy(model), loaded)
        sciprune.fit(model, t, finetune)
    return pruned, evaluate(model, loaded), achieved


@pytest.mark.parametrize("label", ["qm", *PROCEDURES])
def test_each_variant_equals_the_library_with_its_options(studies, dense, label):
    case, run, _ = studies
    for ratio in RATIOS:
        pruned, finetuned, achieved = _by_hand(case, dense, label, ratio)
        assert run["sparsity"].sel({k: v for k, v in _at(label, ratio).items() if k != "stage"}).item() == achieved
        for metric, value in finetuned.items():
            assert run[metric].sel(_at(label, ratio)).item() == value, (label, ratio, metric)
        if pruned is not None:
            for metric, value in pruned.items():
                assert run[metric].sel(_at(label, ratio, "pruned")).item() == value, (label, ratio, metric)


def test_one_method_with_two_options_gives_two_results(studies):
    _, run, _ = studies
    for ratio in RATIOS:
        small, large = (run["test_mse"].sel(_at(label, ratio, "pruned")).item() for label in ("qm-small", "qm-large"))
        assert small != large, ratio


def test_sweep_equals_run(studies):
    _, run, sweep = studies
    assert_sweep_equals_run(run, sweep)


def test_the_planner_scores_each_method_and_options_once(monkeypatch):
    import sciprune.planner as planner_module

    calls = []
    real = planner_module.plan
    monkeypatch.setattr(planner_module, "plan", lambda m, meth, d, **k: calls.append((meth, k)) or real(m, meth, d, **k))
    model = sciprune.MLP(2, [5], 1, "tanh", seed=0).double()
    X = torch.randn(30, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    planner = Planner(model, (X, X[:, :1] ** 2), options={"qm": {"examples": 20}})
    a = planner("qm", None, {"locality": 1e-3})
    assert planner("qm", False, {"locality": 1e-3}).scores is a.scores  # the same scoring, shifts dropped
    b = planner("qm", None, {"locality": 1.0})
    assert not all(torch.equal(a.scores[n], b.scores[n]) for n in a.scores)
    planner("qm")
    planner("qm", True, {"examples": 20})  # the study's options of qm, given explicitly: the same entry
    planner("lm", None, {"locality": 1e-3})
    assert [(m, k.get("locality"), k.get("examples")) for m, k in calls] == [
        ("qm", 1e-3, None), ("qm", 1.0, None), ("qm", None, 20), ("lm", 1e-3, None)]


def test_results_keys_change_only_with_options(tmp_path, data):
    plain = {"p": {"method": "qm", "schedule": MULTI}}
    case = _case(tmp_path, data, "k", plain)
    assert "options" not in case.prune.procedures["p"].model_dump()  # the case hash and run keys of old cases
    assert "options" not in json.loads(case.model_dump_json())["prune"]["procedures"]["p"]
    keys = {label: [r.key for r in build_grid(_case(tmp_path, data, "k", procs), data_sha256="x") if r.ratio == 0.5
                    and r.label == "p"] for label, procs in (
        ("plain", plain), ("a", {"p": dict(plain["p"], options={"locality": 1e-3})}),
        ("b", {"p": dict(plain["p"], options={"locality": 1e-2})}))}
    assert len({k[0] for k in keys.values()}) == 3


@pytest.mark.parametrize("procedure,key,needle", [
    ({"method": "qm", "options": {"locality": -1.0}}, "prune.procedures.p.options", "locality"),
    ({"method": "lm", "options": {"examples": 0}}, "prune.procedures.p.options", "examples"),
    ({"method": "qm", "options": {"damp": 1e-3}}, "prune.procedures.p.options", "unknown option"),
    ({"method": "qm", "options": {"locality": "big"}}, "prune.procedures.p.options", "locality"),
    ({"control": "reinit", "of": "qm", "options": {"locality": 1.0}}, "prune.procedures.p", "options"),
    ({"lobster": {"lam": 1e-4}, "options": {"locality": 1.0}}, "prune.procedures.p", "options"),
    ({"method": "obs", "options": {"max_params": 10}}, "prune.procedures.p", "max_params"),
])
def test_bad_procedure_options_are_one_line_before_any_work(tmp_path, data, procedure, key, needle):
    path = tmp_path / "bad.toml"
    path.write_text(tiny_case(tmp_path / "out", data, prune={"methods": ["qm"], "procedures": {"p": procedure}}))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), key, needle, watch=(tmp_path,), before=before)
