"""Joint criteria (choose and compensate together) through the one apply step of ``sciprune.apply_plan``.

``obs-layer`` (exact layer-wise OBS) registered as a criterion: its plan equals ``obs_layer_plan`` +
``apply_obs`` exactly, its costly part is made once per plan, it runs under every schedule of the study
procedure and in ``sciprune run`` / ``sciprune sweep``. Elimination-compensation's bias shifts go through
the same step (checked against the hand computation), also under the multi-step schedule. Float64.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_close, assert_sweep_equals_run, tiny_case
from malformed import assert_user_error, invoke, snapshot

import sciprune
from sciprune import criteria
from sciprune.config import load_case
from sciprune.criteria import ScoreResult, Solution
from sciprune.errors import SciPruneError
from sciprune.masks import get_masks, set_masks
from sciprune.obs_layer import apply_obs, obs_layer_plan
from sciprune.pipeline import evaluate, load_task, make_model, run_case, train_config
from sciprune.planner import Planner
from sciprune.pruning import score_result
from sciprune.results import read_dataset
from sciprune.selection import n_to_prune, select
from sciprune.sweep import run_sweep

F64 = torch.float64
DAMP = 1e-6

pytestmark = pytest.mark.usefixtures("no_figures")  # the studies below draw no figures


def _net(seed: int = 0, n: int = 48, dtype=F64):
    model = sciprune.MLP(3, [6, 5], 2, "tanh", seed=seed).to(dtype)
    g = torch.Generator().manual_seed(seed + 100)
    X = torch.randn(n, 3, generator=g, dtype=F64)
    Y = torch.stack([torch.sin(X[:, 0]), X[:, 1] * X[:, 2]], 1)
    return model, (X.to(dtype), Y.to(dtype))


def _state(model):
    return {**{n: p.detach().clone() for n, p in model.named_parameters()},
            **{f"{n} mask": m for n, m in get_masks(model).items()}}


def _assert_same(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for n in sa:
        assert torch.equal(sa[n], sb[n]), f"{n}: max diff {(sa[n].double() - sb[n].double()).abs().max():.3e}"


def _pruned(model):
    return sum(int((~m).sum()) for m in get_masks(model).values())


# --- obs-layer as a criterion ---------------------------------------------------------------------

@pytest.mark.parametrize("scope", ["global", "layer"])
def test_obs_layer_plan_equals_obs_layer_plan_and_apply_obs(scope):
    model, data = _net()
    set_masks(model, {"linear1.weight": torch.rand(5, 6, generator=torch.Generator().manual_seed(3)) > 0.3})
    p = sciprune.plan(model, "obs-layer", data, damp=DAMP)
    for ratio in (0.3, 0.8):  # one plan, several ratios on copies of the same network
        a, b, c = (copy.deepcopy(model) for _ in range(3))
        rep = sciprune.apply_plan(a, p, ratio, scope=scope)
        ref = apply_obs(b, obs_layer_plan(model, data, ratio, scope=scope, damp=DAMP))
        sciprune.prune(c, "obs-layer", ratio, data, scope=scope, damp=DAMP)
        _assert_same(a, b)
        _assert_same(a, c)
        assert (rep.pruned, rep.total, rep.compensated) == (ref.pruned, ref.total, True)
        assert any(not torch.equal(a.get_parameter(b), model.get_parameter(b))  # the biases moved too
                   for b in ("linear0.bias", "linear1.bias", "linear2.bias"))


def test_obs_layer_scores_are_the_recorded_increases_that_the_allocation_sums():
    model, data = _net(seed=11)
    scores = sciprune.scores(model, "obs-layer", data, damp=DAMP)
    for ratio in (0.3, 0.7):
        res = obs_layer_plan(model, data, ratio, damp=DAMP)
        for n, keep in res.masks.items():  # each row's predicted increase: the scores of the weights it removes
            assert_close((scores[n] * ~keep).sum(1), res.losses[n], rtol=1e-12, what=f"{n} at {ratio}")
            assert bool((scores[n] >= 0).all())


def test_the_hessians_are_made_once_per_plan(monkeypatch):
    import sciprune.obs_layer as obs

    calls = []
    real = obs.layer_hessians
    monkeypatch.setattr(obs, "layer_hessians", lambda *a, **k: calls.append(1) or real(*a, **k))
    model, data = _net(seed=1)
    planner = Planner(model, data, options={"obs-layer": {"damp": DAMP}})
    variants = [planner("obs-layer", c) for c in (None, False, True)]
    for ratio in (0.2, 0.5, 0.9):
        for v in variants:
            sciprune.apply_plan(copy.deepcopy(model), v, ratio)
    assert calls == [1]


def test_compensate_false_keeps_the_choice_without_the_updates_and_true_is_its_own():
    model, data = _net(seed=2)
    own, masks_only, true = (copy.deepcopy(model) for _ in range(3))
    r_own = sciprune.prune(own, "obs-layer", 0.6, data, damp=DAMP)
    r_false = sciprune.prune(masks_only, "obs-layer", 0.6, data, damp=DAMP, compensate=False)
    sciprune.prune(true, "obs-layer", 0.6, data, damp=DAMP, compensate=True)
    _assert_same(own, true)
    assert all(torch.equal(get_masks(own)[n], m) for n, m in get_masks(masks_only).items())  # the same choice
    for n, p in masks_only.named_parameters():  # the dense values, the removed weights zeroed
        keep = get_masks(masks_only).get(n, torch.ones_like(p, dtype=torch.bool))
        assert torch.equal(p.detach(), model.get_parameter(n).detach() * keep), n
    assert r_own.compensated and not r_false.compensated


def test_a_joint_plan_is_refused_on_a_model_it_was_not_made_on():
    model, data = _net(seed=3)
    p = sciprune.plan(model, "obs-layer", data, damp=DAMP)
    sciprune.apply_plan(model, p, 0.4)
    before = _state(model)
    with pytest.raises(SciPruneError, match="make a new plan") as err:
        sciprune.apply_plan(model, p, 0.7)  # pruned since: its updates were for the dense weights
    assert "\n" not in str(err.value)
    assert all(torch.equal(t, _state(model)[n]) for n, t in before.items())  # nothing changed
    trained = copy.deepcopy(model)
    with torch.no_grad():
        trained.linear0.weight.mul_(1.5)
    with pytest.raises(SciPruneError, match="make a new plan"):
        sciprune.apply_plan(trained, sciprune.plan(model, "obs-layer", data, damp=DAMP), 0.7)


# --- elimination-compensation through the same step -------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_ec_bias_shifts_are_updates_summed_over_the_removed_weights(dtype):
    model, data = _net(seed=4, dtype=dtype)
    set_masks(model, {"linear0.weight": torch.rand(6, 3, generator=torch.Generator().manual_seed(1)) > 0.4})
    p = sciprune.plan(model, "ec", data, seed=0)
    before = get_masks(model)
    expect = {n: q.detach().clone() for n, q in model.named_parameters()}
    keep = select(p.scores, 0.7, masks=before)
    for n, k in keep.items():  # by hand: bias += sum of the shifts of the weights removed now (float64, rounded once)
        gone = (before[n] & ~k).to(F64)
        b = n.replace("weight", "bias")
        expect[b] = expect[b] + (p.shifts[n].to(F64) * gone).sum(1).to(dtype)
        expect[n] = expect[n] * k
    rep = sciprune.apply_plan(model, p, 0.7)
    for n, q in model.named_parameters():
        assert torch.equal(q.detach(), expect[n]), n
    assert rep.compensated and all(torch.equal(get_masks(model)[n], keep[n]) for n in keep)


@pytest.mark.parametrize("method,options", [("ec", {}), ("obs-layer", {"damp": DAMP})])
def test_multi_step_one_step_is_one_shot_and_n_steps_are_nested_and_exact(method, options):
    model, data = _net(seed=5)
    one_shot, one_step = copy.deepcopy(model), copy.deepcopy(model)
    sciprune.prune(one_shot, method, 0.8, data, **options)
    sciprune.prune_scheduled(one_step, method, 0.8, data, schedule={"kind": "multi-step", "steps": 1}, **options)
    _assert_same(one_shot, one_step)
    steps = []

    def on_step(m, k, report):
        steps.append((copy.deepcopy(m), report))

    many = copy.deepcopy(model)
    geometric = {"kind": "multi-step", "steps": 4, "spacing": "geometric"}
    sciprune.prune_scheduled(many, method, 0.8, data, schedule=geometric, on_step=on_step, **options)
    total = sum(m.numel() for m in get_masks(model).values())
    prev = model
    for m, report in steps:  # each step re-planned at the partly pruned network, its updates applied
        assert report.pruned == n_to_prune(report.ratio, total) == _pruned(m)
        assert all(bool((get_masks(m)[n] <= k).all()) for n, k in get_masks(prev).items())  # nested
        if method == "ec":  # the step's bias change: the shifts of the step's scoring, over its removals
            shifts = score_result(prev, "ec", data).bias_shifts
            for n, k in get_masks(m).items():
                b = n.replace("weight", "bias")
                gone = (get_masks(prev)[n] & ~k).to(F64)
                change = m.get_parameter(b) - prev.get_parameter(b)
                torch.testing.assert_close(change, (shifts[n] * gone).sum(1), rtol=1e-12, atol=1e-15)
        prev = m
    assert steps[-1][1].pruned == n_to_prune(0.8, total)
    assert not torch.equal(many.linear1.weight, one_shot.linear1.weight)  # re-planned: a different result


def test_iterative_and_cubic_schedules_run_obs_layer_to_the_exact_target():
    model, data = _net(seed=6)
    total = sum(m.numel() for m in get_masks(model).values())
    levels = []
    it = copy.deepcopy(model)
    reps = sciprune.prune_scheduled(it, "obs-layer", 0.75, data, damp=DAMP,
                                    schedule={"kind": "iterative", "fraction": 0.5, "budget_epochs": 1},
                                    train_between=lambda m, k: levels.append(k))
    assert levels == list(range(len(reps) - 1)) and reps[-1].pruned == n_to_prune(0.75, total)
    gp = sciprune.GradualPruning("obs-layer", 0.75, data, schedule={"kind": "cubic", "n_updates": 3, "every": 2},
                                 compensate=None, damp=DAMP)
    sciprune.fit(copy.deepcopy(model), data, sciprune.TrainConfig(epochs=8, lr=1e-3), hooks=[gp])
    assert [r.pruned for r in gp.reports] == sorted(r.pruned for r in gp.reports)
    assert gp.reports[-1].pruned == n_to_prune(0.75, total) and gp.reports[-1].compensated


# --- the registry mechanism and bad input ------------------------------------------------------------

def test_registry_lists_obs_layer_as_a_joint_weight_method():
    assert "obs-layer" in sciprune.methods("weight") and criteria.is_joint("obs-layer")
    assert not any(criteria.is_joint(m) for m in ("ec", "magnitude", "no-such-method"))
    assert "jointly" in criteria.get("obs-layer").summary
    assert "obs-layer" not in sciprune.ensemble.BATCHED_METHODS


def _toy_joint(model, batches, names, generator, *, step=1.0) -> ScoreResult:
    """A joint criterion by hand: magnitude's choice, each bias moved by ``step`` per weight removed from its row."""
    params = dict(model.named_parameters())
    scores = {n: params[n].detach().abs() for n in names}
    before = get_masks(model, names=names)

    def solve(ratio, scope):
        keep = select(scores, ratio, scope=scope, masks=before)
        return Solution(keep, {n.replace("weight", "bias"): step * (before[n] & ~keep[n]).sum(1).to(F64) for n in keep})

    return ScoreResult(scores, solve=solve)


def test_any_joint_criterion_is_one_registered_function_with_a_solver():
    model, data = _net(seed=7)
    with criteria._registry.restoring_registry():
        criteria.register("test-joint", summary="toy", needs_data=False, options={"step": "bias step"},
                          joint=True)(_toy_joint)
        pruned = copy.deepcopy(model)
        sciprune.prune(pruned, "test-joint", 0.5, step=0.25)
        for n, k in get_masks(pruned).items():
            b = n.replace("weight", "bias")
            assert torch.equal(pruned.get_parameter(b), model.get_parameter(b) + 0.25 * (~k).sum(1).to(F64))
        members = [copy.deepcopy(model) for _ in range(2)]
        sciprune.ensemble.prune_ensemble(members, "test-joint", [0.5, 0.5], step=0.25)
        _assert_same(members[0], pruned)
        criteria.register("test-no-solver", summary="toy", needs_data=False, joint=True)(
            lambda model, batches, names, generator: ScoreResult({n: torch.ones(1) for n in names}))
        with pytest.raises(RuntimeError, match="solver"):
            sciprune.prune(copy.deepcopy(model), "test-no-solver", 0.5)
    with pytest.raises(SciPruneError, match="granularity"):
        criteria.register("test-bad", summary="x", needs_data=False, joint=True, granularity="neuron")


def test_prune_ensemble_runs_obs_layer_member_by_member():
    model, data = _net(seed=8)
    other, data2 = _net(seed=9)
    members = [copy.deepcopy(model), copy.deepcopy(other)]
    sciprune.ensemble.prune_ensemble(members, "obs-layer", [0.5, 0.8], [data, data2], damp=DAMP)
    for m, (ref, d, r) in zip(members, [(model, data, 0.5), (other, data2, 0.8)]):
        ref = copy.deepcopy(ref)
        sciprune.prune(ref, "obs-layer", r, d, damp=DAMP)
        _assert_same(m, ref)


@pytest.mark.parametrize("options,needle", [
    ({"bogus": 1}, "bogus"), ({"damp": -1.0}, "damp"), ({"damp": float("nan")}, "damp"),
    ({"damp": 0.0, "dup": True}, "singular.*damp"),
])
def test_bad_options_are_one_line_errors(options, needle):
    model, (X, Y) = _net(seed=10)
    if options.pop("dup", False):
        X = torch.cat([X[:, :2], X[:, :1]], 1)  # a duplicated input: H of the first layer is singular
    with pytest.raises(SciPruneError, match=needle) as err:
        sciprune.prune(model, "obs-layer", 0.5, (X, Y), **options)
    assert "\n" not in str(err.value)
    assert _pruned(model) == 0


# --- studies: sciprune run and sciprune sweep ---------------------------------------------------------

CUBIC = {"kind": "cubic", "n_updates": 2, "every": 2, "start_step": 1}
PRUNE = {"methods": ["obs-layer", "ec", "obs"], "no_compensate": ["obs-layer"], "ratios": [0.5, 0.8],
         "options": {"obs-layer": {"damp": DAMP}, "obs": {"damp": 1e-6, "block": 2}}, "schedule": {"kind": "multi-step", "steps": 2},
         "procedures": {"obs-iter": {"method": "obs-layer", "schedule": {"kind": "iterative", "fraction": 0.5,
                                                                          "budget_epochs": 1}},
                        "obs-cubic": {"method": "obs-layer", "schedule": CUBIC}}}


@pytest.fixture(scope="module")
def studies(tmp_path_factory, tiny_pdebench):
    tmp = tmp_path_factory.mktemp("joint")

    def case(name):
        path = tmp / f"{name}.toml"
        path.write_text(tiny_case(tmp / name, tiny_pdebench, name=name, prune=PRUNE, train={"epochs": 6},
                                  finetune={"epochs": 2}, model={"widths": [6, 5]}))
        return load_case(path)

    run = read_dataset(run_case(case("r"), show_progress=False, echo=lambda s: None))
    sweep = read_dataset(run_sweep(case("s"), show_progress=False, echo=lambda s: None))
    return case("r"), run, sweep


def test_studies_run_obs_layer_as_the_library_does(studies):
    case, run, _ = studies
    loaded = load_task(case, 0.0, 0, device="cpu", dtype=F64)
    t = loaded.task
    dense = make_model(case.model, t.in_features, t.out_features, 0, device="cpu", dtype=F64)
    sciprune.fit(dense, t, train_config(case.train, 0))
    total = sum(m.numel() for m in get_masks(dense).values())
    at = {"arch": "model", "noise": 0.0, "seed": 0}
    for ratio in PRUNE["ratios"]:
        for label, method, compensate in (("obs-layer", "obs-layer", None), ("obs-layer-noshift", "obs-layer", False),
                                          ("ec", "ec", None), ("obs", "obs", None)):
            model = copy.deepcopy(dense)
            sciprune.prune_scheduled(model, method, ratio, t, schedule=PRUNE["schedule"], compensate=compensate, seed=0,
                                     **PRUNE["options"].get(method, {}))
            got = run["test_mse"].sel({**at, "method": label, "ratio": ratio, "stage": "pruned"}).item()
            assert got == evaluate(model, loaded)["test_mse"], (label, ratio)
        for label in ("obs-layer", "obs-iter", "obs-cubic"):
            got = run["sparsity"].sel({**at, "method": label, "ratio": ratio}).item()
            assert got == n_to_prune(ratio, total) / total, (label, ratio)
    differ = run["test_mse"].sel({**at, "stage": "pruned", "ratio": 0.8})
    assert differ.sel({"method": "obs-layer"}).item() != differ.sel({"method": "obs-layer-noshift"}).item()


def test_sweep_equals_run_with_obs_layer(studies):
    _, run, sweep = studies
    assert_sweep_equals_run(run, sweep)


@pytest.mark.parametrize("options,needle", [({"damp": -1.0}, "damp"), ({"bogus": 1.0}, "bogus")])
def test_bad_obs_layer_options_in_a_case_are_one_line_before_any_work(tmp_path, tiny_pdebench, options, needle):
    path = tmp_path / "bad.toml"
    prune = {"methods": ["obs-layer"], "options": {"obs-layer": options}}
    path.write_text(tiny_case(tmp_path / "out", tiny_pdebench, prune=prune))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), "obs-layer", needle, watch=(tmp_path,), before=before)
