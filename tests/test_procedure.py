"""Pruning under a schedule: re-scored steps, exact sparsity per step, nested masks, one step = one-shot."""

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from malformed import assert_raises_user_error
from sciprune import MLP, get_masks, prune
from sciprune.masks import enforce
from sciprune.procedure import prune_scheduled
from sciprune.schedules import Cubic, Iterative, MultiStep, OneShot
from sciprune.selection import n_to_prune


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return X, torch.sin(3 * X[:, :1]) * X[:, 1:]


DENSE = MLP(2, [8, 6], 1, "tanh", seed=1).double()
DATA = _data()


def _state(model):
    return {**model.state_dict(), **{f"{n}/mask": m for n, m in get_masks(model).items()}}


def _assert_same(a, b):
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def _check_steps(reports, masks, scope):
    """Each step prunes exactly floor(ratio * n + 0.5) of its pool and keeps the earlier pruned ones."""
    for rep, m in zip(reports, masks):
        if scope == "global":
            n = sum(t.numel() for t in m.values())
            assert rep.pruned == n_to_prune(rep.ratio, n) == sum(int((~t).sum()) for t in m.values())
        else:
            for name, t in m.items():
                assert int((~t).sum()) == n_to_prune(rep.ratio, t.numel()), name
    for earlier, later in zip(masks, masks[1:]):
        for name in earlier:
            assert not (later[name] & ~earlier[name]).any(), f"{name} revived a weight"


def _run(method, p, schedule, scope, **kw):
    """Prune a copy of DENSE; return it, the reports and the masks after every step."""
    model, masks = copy.deepcopy(DENSE), []
    reports = prune_scheduled(model, method, p, DATA, schedule=schedule, scope=scope,
                              on_step=lambda m, k, rep: masks.append(get_masks(m)), **kw)
    return model, reports, masks


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["magnitude", "ec", "gradient"]), st.floats(0.0, 0.95), st.integers(1, 6),
       st.sampled_from(["linear", "geometric"]), st.sampled_from(["global", "layer"]))
def test_multi_step_is_exact_at_every_step_and_nested(method, p, steps, spacing, scope):
    schedule = MultiStep(steps, spacing)
    model, reports, masks = _run(method, p, schedule, scope)
    assert [r.ratio for r in reports] == schedule.targets(p)
    _check_steps(reports, masks, scope)
    for name, w in model.named_parameters():  # pruned weights are zero in the model
        if name in masks[-1]:
            assert not w[~masks[-1][name]].any()


@pytest.mark.parametrize("method,compensate", [("ec", None), ("ec", False), ("magnitude", True), ("gradient", None)])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_one_step_equals_one_shot_prune(method, compensate, scope):
    for schedule in (MultiStep(1), OneShot(), MultiStep(1, "geometric")):
        a, b = copy.deepcopy(DENSE), copy.deepcopy(DENSE)
        ra = prune(a, method, 0.6, DATA, scope=scope, compensate=compensate, seed=2)
        (rb,) = prune_scheduled(b, method, 0.6, DATA, schedule=schedule, scope=scope, compensate=compensate, seed=2)
        assert (ra.pruned, ra.total, ra.compensated, ra.ratio) == (rb.pruned, rb.total, rb.compensated, rb.ratio)
        _assert_same(a, b)


@settings(max_examples=25, deadline=None)
@given(st.floats(0.0, 0.95), st.integers(1, 8), st.sampled_from(["linear", "geometric"]),
       st.sampled_from(["global", "layer"]))
def test_multi_step_magnitude_equals_one_shot_magnitude(p, steps, spacing, scope):
    """|W| of a live weight does not change when others are pruned: every step extends the one ranking."""
    a, b = copy.deepcopy(DENSE), copy.deepcopy(DENSE)
    prune(a, "magnitude", p, scope=scope)
    prune_scheduled(b, "magnitude", p, schedule=MultiStep(steps, spacing), scope=scope)
    _assert_same(a, b)


@pytest.mark.parametrize("method", ["ec", "gradient"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_multi_step_rescoring_differs_from_one_shot(method, scope):
    a, b = copy.deepcopy(DENSE), copy.deepcopy(DENSE)
    prune(a, method, 0.8, DATA, scope=scope)
    prune_scheduled(b, method, 0.8, DATA, schedule=MultiStep(5), scope=scope)
    ma, mb = get_masks(a), get_masks(b)
    assert sum(int((~ma[n]).sum()) for n in ma) == sum(int((~mb[n]).sum()) for n in mb)
    assert any(not torch.equal(ma[n], mb[n]) for n in ma)


@pytest.mark.parametrize("method,compensate", [("ec", None), ("gradient", True)])
def test_multi_step_equals_successive_prune_calls(method, compensate):
    """Step k is prune() of the partly pruned model at the step's sparsity, bias shifts included."""
    schedule = MultiStep(4, "geometric")
    a, b = copy.deepcopy(DENSE), copy.deepcopy(DENSE)
    for r in schedule.targets(0.85):
        prune(a, method, r, DATA, compensate=compensate, seed=5)
    reports = prune_scheduled(b, method, 0.85, DATA, schedule=schedule, compensate=compensate, seed=5)
    assert all(r.compensated for r in reports)
    _assert_same(a, b)
    shifted = [n for (n, pb), (_, pd) in zip(b.named_parameters(), DENSE.named_parameters())
               if n.endswith("bias") and not torch.equal(pb, pd)]
    assert shifted  # the steps' compensation did move biases


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_iterative_trains_between_levels_and_stays_exact(scope):
    schedule = Iterative(fraction=0.2, budget_epochs=1)
    model, seen, steps = copy.deepcopy(DENSE), [], []
    g = torch.Generator().manual_seed(0)

    def train(m, level):  # a stand-in for retraining: move every live weight, keep the masks
        seen.append((level, get_masks(m)))
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        enforce(m)

    reports = prune_scheduled(model, "magnitude", 0.7, schedule=schedule, scope=scope, train_between=train,
                              on_step=lambda m, k, rep: steps.append(k))
    assert [lv for lv, _ in seen] == list(range(len(reports) - 1)) and steps == list(range(len(reports)))
    _check_steps(reports, [m for _, m in seen] + [get_masks(model)], scope)
    if scope == "global":  # open_lth: ceil(0.2 * remaining) weights per level, then the target
        total, pruned = reports[0].total, [0] + [r.pruned for r in reports]
        for before, after in zip(pruned[:-2], pruned[1:-1]):
            assert after - before == math.ceil(0.2 * (total - before))
        assert pruned[-1] == n_to_prune(0.7, total)
    else:
        assert [r.ratio for r in reports] == schedule.targets(0.7)


def _unchanged(fn):
    model = copy.deepcopy(DENSE)
    before = _state(model)
    fn(model)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("call,needles", [
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, schedule=Cubic(n_updates=3, every=10)),
     ["cubic", "during training", "GradualPruning"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, schedule=Iterative(fraction=0.2, budget_epochs=1)),
     ["iterative", "train_between"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, schedule=MultiStep(2), train_between=lambda m, k: None),
     ["train_between", "multi-step"]),
    (lambda m: prune_scheduled(m, "ec", 1.0, DATA, schedule=MultiStep(2)), ["target", "[0, 1)"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, schedule={"kind": "multi-step", "steps": 0}), ["steps", ">= 1"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, schedule="gradual"), ["schedule kind", "gradual"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, schedule=MultiStep(2), scope="row"), ["scope", "row"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, None, schedule=MultiStep(2)), ["needs data"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, schedule=MultiStep(2), bogus=1), ["bogus"]),
    (lambda m: prune_scheduled(m, "ec", 0.5, DATA, on_step="print"), ["on_step", "function"]),
    (lambda m: prune_scheduled("model", "ec", 0.5, DATA), ["torch.nn.Module"]),
])
def test_bad_input_is_one_line_and_changes_nothing(call, needles):
    def go(model):
        assert_raises_user_error(lambda: call(model), *needles)

    _unchanged(go)


def test_schedule_as_dict_is_the_same_as_the_object():
    a, b = copy.deepcopy(DENSE), copy.deepcopy(DENSE)
    prune_scheduled(a, "ec", 0.7, DATA, schedule=MultiStep(3, "geometric"))
    prune_scheduled(b, "ec", 0.7, DATA, schedule={"kind": "multi-step", "steps": 3, "spacing": "geometric"})
    _assert_same(a, b)


# --------------------------------------------------------------------------- cubic, during training
class _Record:
    """A hook recording, after every optimiser step, the masks and whether pruned weights are zero."""

    def __init__(self):
        self.masks, self.zero = [], True

    def after_step(self, state):
        masks = get_masks(state.model)
        self.masks.append(masks)
        params = dict(state.model.named_parameters())
        self.zero &= all(bool((params[n][~m] == 0).all()) for n, m in masks.items())


@pytest.mark.parametrize("method,scope", [("magnitude", "global"), ("gradient", "layer"), ("ec", "global")])
def test_gradual_pruning_follows_the_cubic_schedule_during_training(method, scope):
    """Updates at t0 + k dt exactly, each to s_t of Zhu & Gupta's closed form (rounded as selection
    rounds), masks nested, pruned weights zero after every optimiser step, final sparsity the target."""
    from sciprune import GradualPruning, TrainConfig, fit

    cubic = Cubic(initial=0.1, start_step=6, n_updates=5, every=4)
    hook, rec = GradualPruning(method, 0.8, DATA, schedule=cubic, scope=scope), _Record()
    model = copy.deepcopy(DENSE)
    fit(model, DATA, TrainConfig(epochs=40, lr=1e-2, seed=0), hooks=[hook, rec])
    assert hook.steps == [6, 10, 14, 18, 22, 26]
    s_f, span = 0.8, 5 * 4
    expected = [s_f + (0.1 - s_f) * (1 - (t - 6) / span) ** 3 for t in hook.steps]
    assert [r.ratio for r in hook.reports] == pytest.approx(expected, rel=0, abs=1e-15)
    assert hook.reports[-1].ratio == 0.8
    masks_at_updates = [rec.masks[t - 1] for t in hook.steps]
    _check_steps(hook.reports, masks_at_updates, scope)
    for earlier, later in zip(rec.masks, rec.masks[1:]):  # nested at every step, not only at updates
        for name in earlier:
            assert not (later[name] & ~earlier[name]).any()
    assert rec.zero


def test_gradual_pruning_refuses_training_too_short_and_other_schedules():
    from sciprune import GradualPruning, TrainConfig, fit

    hook = GradualPruning("magnitude", 0.5, DATA, schedule=Cubic(start_step=5, n_updates=10, every=10))
    assert_raises_user_error(lambda: fit(copy.deepcopy(DENSE), DATA, TrainConfig(epochs=20), hooks=[hook]),
                             "cubic", "step 20", "step 105")
    assert_raises_user_error(lambda: GradualPruning("magnitude", 0.5, DATA, schedule=MultiStep(steps=2)),
                             "cubic", "multi-step")
    assert_raises_user_error(lambda: GradualPruning("magnitude", 1.5, DATA, schedule=Cubic(n_updates=2, every=1)),
                             "target")



def test_gradual_pruning_in_the_ensemble_engine_equals_fit_per_member():
    """The same hook under ``fit_many`` prunes every member as ``fit`` prunes one model (same masks;
    weights to the ensemble engine's usual 1e-12)."""
    from sciprune import GradualPruning, TrainConfig, fit
    from sciprune.ensemble import fit_many

    cubic = Cubic(start_step=4, n_updates=4, every=3)
    cfg = TrainConfig(epochs=20, lr=1e-2, seed=0)
    members = [copy.deepcopy(DENSE) for _ in range(2)]
    fit_many(members, DATA, cfg, hooks=[GradualPruning("magnitude", 0.7, DATA, schedule=cubic)])
    alone = copy.deepcopy(DENSE)
    fit(alone, DATA, cfg, hooks=[GradualPruning("magnitude", 0.7, DATA, schedule=cubic)])
    for member in members:
        assert {n: torch.equal(m, get_masks(alone)[n]) for n, m in get_masks(member).items()} == \
            {n: True for n in get_masks(alone)}
        for a, b in zip(member.parameters(), alone.parameters()):
            assert torch.allclose(a, b, rtol=0, atol=1e-12)
