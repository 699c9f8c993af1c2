"""LOBSTER as a study procedure (``[prune.procedures.NAME] lobster = {...}``) and the Lobster hook's cap
``max_sparsity``. Checked in float64: the study's variant equals ``sciprune.fit`` with the Lobster hook by
hand on the same weights, ``sweep`` equals ``run``, a capped thresholding prunes exactly
floor(s n + 1/2) weights (the smallest), masks only shrink, bad tables are one line before any work."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import assert_sweep_equals_run, tiny_case
from study_networks import trained_by_hand
from hypothesis import given, settings
from hypothesis import strategies as st
from malformed import assert_user_error, invoke, snapshot
from torch import nn

import sciprune
from sciprune.config import load_case
from sciprune.ensemble import fit_many
from sciprune.lobster import Lobster, ScaledLobster
from sciprune.lobster_threshold import apply_threshold, linear_names
from sciprune.masks import get_masks
from sciprune.pipeline import evaluate, run_case
from sciprune.results import read_dataset
from sciprune.sweep import run_sweep
from sciprune.training import TrainConfig, fit

DT = torch.float64
LAM, TWT = 1e-2, 0.5
PROCEDURES = {
    "lob": {"lobster": {"lam": LAM, "twt": TWT, "pwe": 0}, "start": "init"},
    "lobt": {"lobster": {"lam": LAM, "twt": TWT, "pwe": 1}},
    "lobs": {"lobster": {"lam": LAM, "twt": TWT, "pwe": 0, "scaled": True, "beta": 0.9}, "start": "init"},
}
RATIOS = [0.3, 0.8]
N_WEIGHTS = 2 * 8 + 8 * 8 + 8  # the 2-8-8-1 network's Linear weights


def _case(tmp_path, data, name, **extra):
    path = tmp_path / f"{name}.toml"
    prune = {"methods": ["magnitude"], "ratios": RATIOS, "procedures": PROCEDURES, "keep_steps": "all", **extra}
    path.write_text(tiny_case(tmp_path / name, data, name=name, prune=prune, train={"epochs": 8},
                              finetune={"epochs": 3}, model={"widths": [8, 8]}))
    return load_case(path)


def _at(method, ratio, **more):
    return {"arch": "model", "noise": 0.0, "seed": 0, "method": method, "ratio": ratio, **more}


@pytest.fixture(scope="module")
def studies(tmp_path_factory, tiny_pdebench):
    import sciprune.pipeline

    figures, sciprune.pipeline._figures = sciprune.pipeline._figures, lambda *args: None
    try:
        tmp = tmp_path_factory.mktemp("lob")
        run = read_dataset(run_case(_case(tmp, tiny_pdebench, "r"), show_progress=False, echo=lambda s: None))
        case = _case(tmp, tiny_pdebench, "s")
        sweep = read_dataset(run_sweep(case, show_progress=False, echo=lambda s: None))
    finally:
        sciprune.pipeline._figures = figures
    return case, run, sweep


class _AfterThreshold:
    """Keeps the parameters just after each thresholding of ``hook`` that pruned (placed after it)."""

    def __init__(self, hook):
        self.hook, self.seen, self.params = hook, 0, None

    def end_of_epoch(self, state):
        if any(e.pruned for e in self.hook.events[self.seen:]):
            self.params = {n: p.detach().clone() for n, p in state.model.named_parameters()}
        self.seen = len(self.hook.events)


def test_the_study_variant_equals_fit_with_the_lobster_hook_by_hand(studies):
    case, run, _ = studies
    loaded, train, finetune, init, dense = trained_by_hand(case)
    t = loaded.task
    for ratio in RATIOS:
        for name, spec in PROCEDURES.items():
            opts = dict(spec["lobster"])
            cls = ScaledLobster if opts.pop("scaled", False) else Lobster
            hook = cls(**opts, val=(t.X_val, t.Y_val), biases=False, max_sparsity=ratio)
            after = _AfterThreshold(hook)
            model, cfg = (init(), train) if spec.get("start") == "init" else (copy.deepcopy(dense), finetune)
            before = evaluate(model, loaded)
            fit(model, t, replace(cfg, eval_every=1), hooks=[hook, after])
            got = {stage: run["test_mse"].sel(_at(name, ratio, stage=stage)).item() for stage in ("pruned", "finetuned")}
            assert got["finetuned"] == evaluate(model, loaded)["test_mse"], (name, ratio)
            if after.params is None:
                assert got["pruned"] == before["test_mse"]
            else:
                then = copy.deepcopy(model)
                with torch.no_grad():
                    for n, p in then.named_parameters():
                        p.copy_(after.params[n])
                assert got["pruned"] == evaluate(then, loaded)["test_mse"], (name, ratio)
            pruned = sum(int((~m).sum()) for m in get_masks(model).values())
            assert run["sparsity"].sel(_at(name, ratio)).item() == pruned / N_WEIGHTS
            assert run["step_sparsity"].sel(_at(name, ratio, step=1)).item() == pruned / N_WEIGHTS
            assert pruned <= math.floor(ratio * N_WEIGHTS + 0.5)
            assert not any(n.endswith("bias_mask") for n, _ in model.named_buffers())  # biases=False
    # the cap binds at 0.3 for every variant; at 0.8 the fine-tuned one stops short (recorded as it is)
    assert all(run["sparsity"].sel(_at(n, 0.3)).item() == 26 / N_WEIGHTS for n in PROCEDURES)
    assert run["sparsity"].sel(_at("lobt", 0.8)).item() < 70 / N_WEIGHTS


def test_sweep_equals_run_and_resumes(studies):
    case, run, sweep = studies
    assert_sweep_equals_run(run, sweep)
    said: list[str] = []
    again = read_dataset(run_sweep(case, show_progress=False, echo=said.append))
    assert any("0 to run" in s for s in said), said
    for v in sweep.data_vars:
        np.testing.assert_array_equal(again[v].values, sweep[v].values)


# -- the cap in the library ----------------------------------------------------------------------------------
def _problem(seed=0, n=96):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=DT) * 2 - 1
    Xv = torch.rand(48, 2, generator=g, dtype=DT) * 2 - 1
    f = lambda Z: torch.sin(3 * Z[:, :1]) * Z[:, 1:]  # noqa: E731
    return (X, f(X)), (Xv, f(Xv))


class _Watch:
    """After each epoch: masks only shrink, masked weights are zero, and the pruned count never exceeds K."""

    def __init__(self, hook, K):
        self.hook, self.K, self.masks, self.counts, self.events = hook, K, None, [], []

    def end_of_epoch(self, state):
        masks = get_masks(state.model)
        if self.masks is not None:
            assert all(bool((masks[n] <= self.masks[n]).all()) for n in masks)  # only shrink
        params = dict(state.model.named_parameters())
        assert all(bool((params[n][~m] == 0).all()) for n, m in masks.items())
        self.masks, count = masks, sum(int((~m).sum()) for m in masks.values())
        assert count <= self.K
        if self.counts and self.counts[-1] == self.K:
            assert len(self.hook.events) == self.events[-1]  # the cap reached: no further thresholding
        self.counts.append(count)
        self.events.append(len(self.hook.events))


@pytest.mark.parametrize("cls", [Lobster, ScaledLobster])
def test_a_capped_lobster_prunes_exactly_to_the_cap_then_holds(cls):
    data, val = _problem()
    free = sciprune.MLP(2, [8, 8], 1, "tanh", seed=3).to(DT)
    fit(free, data, TrainConfig(lr=1e-2, epochs=40, batch_size=32, seed=0))  # trained: thresholdings come in steps
    capped = copy.deepcopy(free)
    cfg = TrainConfig(lr=1e-2, epochs=12, batch_size=32, seed=0)
    n = sum(p.numel() for name, p in free.named_parameters() if name.endswith("weight"))
    K = math.floor(0.4 * n + 0.5)
    h_free = cls(LAM, val=val, twt=0.05, pwe=0, biases=False)
    h_cap = cls(LAM, val=val, twt=0.05, pwe=0, biases=False, max_sparsity=0.4)
    watch = _Watch(h_cap, K)
    fit(free, data, cfg, val=val, hooks=[h_free])
    fit(capped, data, cfg, val=val, hooks=[h_cap, watch])
    assert watch.counts[-1] == K and watch.counts[0] < K  # reached in steps, then held
    first = next(i for i, e in enumerate(h_cap.events) if e.capped)
    assert h_cap.events[:first] == h_free.events[:first]  # identical to the authors' until the cap binds
    assert sum(e.pruned for e in h_cap.events[: first + 1]) == K and len(h_cap.events) == first + 1
    assert h_free.events[first].pruned > h_cap.events[first].pruned
    assert sum(e.pruned for e in h_free.events) > K


def test_a_cap_that_never_binds_changes_nothing():
    data, val = _problem()
    a = sciprune.MLP(2, [8, 8], 1, "tanh", seed=3).to(DT)
    fit(a, data, TrainConfig(lr=1e-2, epochs=40, batch_size=32, seed=0))
    b = copy.deepcopy(a)
    cfg = TrainConfig(lr=1e-2, epochs=8, batch_size=32, seed=0)
    ha, hb = Lobster(LAM, val=val, twt=0.01, pwe=0), Lobster(LAM, val=val, twt=0.01, pwe=0, max_sparsity=0.9)
    fit(a, data, cfg, val=val, hooks=[ha])
    fit(b, data, cfg, val=val, hooks=[hb])
    assert ha.events == hb.events and sum(e.pruned for e in ha.events) > 0 and not any(e.capped for e in hb.events)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_caps_per_member_in_the_ensemble_equal_per_member_fits():
    data, val = _problem(2)
    caps, M = [0.2, 0.5, 0.35], 3
    cfgs = [TrainConfig(lr=1e-2, epochs=8, batch_size=32, seed=s) for s in range(M)]
    alone = [sciprune.MLP(2, [6, 6], 1, "tanh", seed=10 + m).to(DT) for m in range(M)]
    together = [sciprune.MLP(2, [6, 6], 1, "tanh", seed=10 + m).to(DT) for m in range(M)]
    hooks = [Lobster(LAM, val=val, twt=TWT, pwe=0, biases=False, max_sparsity=caps[m]) for m in range(M)]
    for m in range(M):
        fit(alone[m], data, cfgs[m], val=val, hooks=[hooks[m]])
    shared = Lobster(LAM, val=[val] * M, twt=TWT, pwe=0, biases=False, max_sparsity=caps)
    fit_many(together, [data] * M, cfgs, val=[val] * M, hooks=[shared])
    n = 2 * 6 + 6 * 6 + 6
    for m in range(M):
        for a, b in zip(alone[m].parameters(), together[m].parameters()):
            assert torch.allclose(a, b, rtol=0, atol=1e-10), m
        ma, mb = get_masks(alone[m]), get_masks(together[m])
        assert all(torch.equal(ma[k], mb[k]) for k in ma)
        assert sum(int((~v).sum()) for v in mb.values()) == math.floor(caps[m] * n + 0.5)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), limit=st.integers(0, 30), T=st.floats(0.05, 3.0), biases=st.booleans())
def test_a_limited_threshold_prunes_the_smallest_weights(seed, limit, T, biases):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)
    with torch.no_grad():  # magnitudes on a coarse grid: ties; some zeros (already pruned)
        for p in model.parameters():
            p.copy_(torch.randint(-8, 9, p.shape, generator=g).to(DT) / 4)
    names = linear_names(model, biases=biases)
    params = dict(model.named_parameters())
    before = {n: params[n].detach().clone() for n in names}
    weights = [n for n in names if n.endswith("weight")]
    live = torch.cat([before[n].flatten() for n in weights])
    below = int(((live.abs() < T) & (live != 0)).sum())
    order = sorted((abs(v), i) for i, v in enumerate(live.tolist()) if v != 0)  # (|w|, position)
    count = apply_threshold(model, T, names, limit=limit)
    after = torch.cat([params[n].detach().flatten() for n in weights])
    cut = (live != 0) & (after == 0)
    assert int(cut.sum()) == min(below, limit)
    expected = {i for _, i in order[: min(below, limit)]}
    assert {int(i) for i in torch.nonzero(cut).flatten()} == expected
    cap = order[limit][0] if below > limit else math.inf
    for n in names:
        if not n.endswith("weight"):
            b = before[n]
            assert torch.equal(params[n] == 0, (b == 0) | (b.abs() < min(T, cap)))
    assert count == int(cut.sum()) + sum(int(((before[n] != 0) & (params[n] == 0)).sum()) for n in names
                                         if not n.endswith("weight"))


# -- bad tables: one line, exit 2, before any work -----------------------------------------------------------
BAD = [
    ({"lobster": {"lam": 0.0}}, "prune.procedures.x.lobster.lam", "> 0"),
    ({"lobster": {"lam": 2.0}}, "prune.procedures.x.lobster.lam", "(0, 1]"),
    ({"lobster": {"lam": float("nan")}}, "prune.procedures.x.lobster.lam", "finite"),
    ({"lobster": {"lam": 1e-4, "tw": 0.05}}, "prune.procedures.x.lobster", "unknown lobster key"),
    ({"lobster": {"twt": -0.1}}, "prune.procedures.x.lobster.twt", ">= 0"),
    ({"lobster": {"pwe": -1}}, "prune.procedures.x.lobster.pwe", "pwe"),
    ({"lobster": {"beta": 0.9}}, "prune.procedures.x.lobster.beta", "scaled = true"),
    ({"lobster": {}, "schedule": {"kind": "iterative", "fraction": 0.5, "budget_epochs": 0}}, "prune.procedures.x",
     "no schedule"),
    ({"lobster": {}, "rewind": 0}, "prune.procedures.x", "no schedule, rewind"),
    ({"lobster": {}, "control": "reinit", "of": "magnitude"}, "prune.procedures.x", "control"),
    ({"lobster": {}, "method": "ec"}, "prune.procedures.x.method", "own thresholding"),
]


@pytest.mark.parametrize("procedure,key,needle", BAD)
def test_bad_lobster_tables_are_one_line_before_any_work(tmp_path, tiny_pdebench, procedure, key, needle):
    path = tmp_path / "bad.toml"
    path.write_text(tiny_case(tmp_path / "out", tiny_pdebench, prune={"methods": ["magnitude"],
                                                                      "procedures": {"x": procedure}}))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), key, needle, watch=(tmp_path,), before=before)


def test_lobster_without_a_validation_split_is_refused(tmp_path, tiny_pdebench):
    path = tmp_path / "noval.toml"
    path.write_text(tiny_case(tmp_path / "out", tiny_pdebench, data={"val_fraction": 0.0},
                              prune={"methods": ["magnitude"], "procedures": {"x": {"lobster": {}}}}))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), "prune.procedures.x.lobster", "validation split",
                          watch=(tmp_path,), before=before)


@pytest.mark.parametrize("ref", [{"lobster": {}},
                                 {"schedule": {"kind": "cubic", "n_updates": 2, "every": 1}}])
def test_a_control_of_a_variant_pruned_during_its_final_training_is_refused(tmp_path, tiny_pdebench, ref):
    """A control takes its reference's masks before the final training: a lobster or cubic reference
    makes its masks during that training, so it has none to give then."""
    path = tmp_path / "bad.toml"
    path.write_text(tiny_case(tmp_path / "out", tiny_pdebench, prune={
        "methods": ["magnitude"], "procedures": {"ref": ref, "c": {"control": "reinit", "of": "ref"}}}))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), "prune.procedures.c.of", "before its final training",
                          watch=(tmp_path,), before=before)
