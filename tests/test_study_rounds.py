"""Neuron pruning in rounds as a study procedure (``[prune.procedures.NAME] rounds = {...}``, optional
``penalty``) and the ``widths`` control. Checked in float64: the study's variant equals
``prune_in_rounds`` by hand on the same starting weights (with the FlatnessPenalty hook for hgnp), its
sparsity is the exact neuron count, ``sweep`` equals ``run``, the widths control is a network of the final
widths trained from scratch, and bad tables are one line, exit 2, before any work."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_sweep_equals_run, tiny_case
from study_networks import trained_by_hand
from malformed import assert_user_error, invoke, snapshot

import sciprune
from sciprune.config import load_case
from sciprune.flatness import FlatnessPenalty
from sciprune.neuron_rounds import Rounds, prune_in_rounds
from sciprune.neurons import hidden_layers
from sciprune.pipeline import evaluate, make_model, run_case
from sciprune.results import read_dataset
from sciprune.sweep import run_sweep
from sciprune.training import fit

DT = torch.float64
ROUNDS = {"per_round": 3, "pre_epochs": 2, "between_epochs": 1, "finetune_epochs": 2}
PROCEDURES = {
    "tay": {"method": "taylor-neuron", "rounds": ROUNDS, "options": {"batch_size": 32}},
    "hg": {"method": "hgnp", "start": "init", "rounds": ROUNDS, "penalty": {"mu": 1e-2, "K": 0.0, "refresh": 2},
           "options": {"batch_size": 32, "mu": 1e-2, "K": 0.0}},
    "hg-widths": {"control": "widths", "of": "hg"},
}
RATIOS = [0.25, 0.5]


def _case(tmp_path, data, name, procedures=PROCEDURES, **extra):
    path = tmp_path / f"{name}.toml"
    prune = {"methods": ["neuron-magnitude"], "ratios": RATIOS, "procedures": procedures, **extra}
    path.write_text(tiny_case(tmp_path / name, data, name=name, prune=prune, train={"epochs": 4},
                              finetune={"epochs": 2}, model={"widths": [6, 6]}))
    return path


def _at(method, ratio, **more):
    return {"arch": "model", "noise": 0.0, "seed": 0, "method": method, "ratio": ratio, **more}


@pytest.fixture(scope="module")
def studies(tmp_path_factory, tiny_pdebench):
    import sciprune.pipeline

    figures, sciprune.pipeline._figures = sciprune.pipeline._figures, lambda *args: None
    try:
        tmp = tmp_path_factory.mktemp("rounds")
        run = read_dataset(run_case(load_case(_case(tmp, tiny_pdebench, "r")), show_progress=False, echo=lambda s: None))
        case = load_case(_case(tmp, tiny_pdebench, "s"))
        sweep = read_dataset(run_sweep(case, show_progress=False, echo=lambda s: None))
    finally:
        sciprune.pipeline._figures = figures
    return case, run, sweep


def test_the_study_variant_equals_prune_in_rounds_by_hand(studies):
    case, run, _ = studies
    loaded, train, finetune, init, dense = trained_by_hand(case)
    t = loaded.task
    for ratio in RATIOS:
        a = prune_in_rounds(dense, "taylor-neuron", ratio, t, rounds=Rounds(**ROUNDS), config=finetune, batch_size=32)
        b = prune_in_rounds(init(), "hgnp", ratio, t, rounds=Rounds(**ROUNDS), config=train,
                            hooks=[FlatnessPenalty(1e-2, 0.0, 2)], batch_size=32, mu=1e-2, K=0.0)
        for name, res in (("tay", a), ("hg", b)):
            got = run["test_mse"].sel(_at(name, ratio, stage="finetuned")).item()
            assert got == evaluate(res.model, loaded)["test_mse"], (name, ratio)
            assert run["sparsity"].sel(_at(name, ratio)).item() == round(ratio * 12) / 12
        widths = [h.size for h in hidden_layers(b.model)]
        assert sum(widths) == 12 - round(ratio * 12)
        control = make_model(case.model, t.in_features, t.out_features, 0, device="cpu", dtype=DT)
        from sciprune.study_rounds import widths_network

        scratch = widths_network(control, b.model, 0)
        fit(scratch, t, train)
        got = run["test_mse"].sel(_at("hg-widths", ratio, stage="finetuned")).item()
        assert got == evaluate(scratch, loaded)["test_mse"]


def test_sweep_equals_run(studies):
    _, run, sweep = studies
    assert_sweep_equals_run(run, sweep)


@pytest.mark.parametrize("proc,needle", [
    ({"method": "taylor-neuron", "rounds": {"per_round": 0}}, "per_round"),
    ({"method": "taylor-neuron", "rounds": {"per_round": 2, "every": 1}}, "every"),
    ({"method": "hgnp", "rounds": {"per_round": 2}, "penalty": {"mu": -1, "K": 0}}, "mu"),
    ({"method": "hgnp", "penalty": {"mu": 1, "K": 0}}, "set rounds too"),
    ({"method": "taylor-neuron", "rounds": {"per_round": 2}, "schedule": {"kind": "multi-step", "steps": 2}}, "rounds"),
    ({"control": "widths", "of": "neuron-magnitude"}, "pruned in rounds"),
])
def test_bad_tables_one_line_before_any_work(tmp_path, tiny_pdebench, proc, needle):
    path = _case(tmp_path, tiny_pdebench, "bad", procedures={"x": proc})
    before = snapshot(tmp_path)
    assert_user_error(invoke(["run", path]), needle, watch=(tmp_path,), before=before)


def test_saved_surrogate_is_the_compact_network_with_the_neurons_it_kept(tmp_path, tiny_pdebench):
    path = _case(tmp_path, tiny_pdebench, "saved", procedures={"tay": PROCEDURES["tay"]}, ratios=[0.5])
    text = path.read_text().replace("save_models = false", "save_models = true")
    path.write_text(text)
    assert invoke(["run", path]).exit_code == 0
    saved = next((tmp_path / "saved" / "models").glob("tay_r0.5_*.sciprune"))
    model = sciprune.load(saved)
    widths = [h.size for h in hidden_layers(model.model)]
    prov = model.metadata["provenance"]["neurons"]
    assert sum(widths) == 6 and prov["widths"][-1] == widths
    assert [len(k) for k in prov["kept"].values()] == widths


@pytest.mark.parametrize("procs,extra,needle", [
    ({"x": {"method": "taylor-neuron", "rounds": {"per_round": 2, "scope": "layer"}}}, {"methods": ["magnitude"], "ratios": [0.95]},
     "would remove all 6"),
    ({}, {"methods": ["neuron-magnitude"], "ratios": [0.95], "scope": "global"}, "leaving fewer than one"),
])
def test_a_ratio_that_empties_a_layer_is_refused_at_load(tmp_path, tiny_pdebench, procs, extra, needle):
    path = _case(tmp_path, tiny_pdebench, "empty", procedures=procs, **extra)
    before = snapshot(tmp_path)
    assert_user_error(invoke(["run", path]), needle, watch=(tmp_path,), before=before)
