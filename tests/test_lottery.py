"""Lottery tickets with rewinding, the retraining budget and the random controls (float64, tiny networks)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import sciprune
from sciprune.errors import SciPruneError
from sciprune.lottery import lottery_ticket, lottery_tickets
from sciprune.lottery_rewind import (
    Rewind,
    check_rewind_step,
    random_mask,
    reinitialize,
    resume_config,
    rewind,
    snapshot,
)
from sciprune.masks import get_masks, mask_pairs
from sciprune.training import TrainConfig, fit

DT = torch.float64
N = 48  # rows; batch 16 -> 3 optimiser steps per epoch


def _data(seed: int = 0, noise: float = 0.0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(N, 3, generator=g, dtype=DT) * 2 - 1
    Y = torch.sin(2 * X[:, :1]) * X[:, 1:2] + X[:, 2:] + noise * torch.randn(N, 1, generator=g, dtype=DT)
    return X, Y


def _model(seed: int = 1, act: str = "relu"):
    return sciprune.MLP(3, [8, 8], 1, act, seed=seed).to(DT)


CFG = TrainConfig(optimizer="sgd", lr=0.05, epochs=3, batch_size=16, seed=4)  # T = 9 optimiser steps


class StopAt:
    """Ends a fit after optimiser step ``k``."""

    def __init__(self, k):
        self.k = k

    def after_step(self, state):
        if state.step >= self.k:
            state.stop = True


class LRs:
    """The learning rate each optimiser step uses (read just before the step)."""

    def __init__(self):
        self.lrs = []

    def after_backward(self, state):
        self.lrs.append(state.optimizer.param_groups[0]["lr"])


def _one_line(exc_info) -> None:
    assert "\n" not in str(exc_info.value) and str(exc_info.value)


# --- Rewind and rewind ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [0, 1, 4, 8])
def test_rewind_stores_step_k_and_restores_kept_weights_bit_for_bit(k):
    X, Y = _data()
    model, ref = _model(), _model()
    hook = Rewind(k)
    fit(model, (X, Y), CFG, hooks=[hook])
    if k:  # the same run stopped after step k: its weights are what step k had
        fit(ref, (X, Y), CFG, hooks=[StopAt(k)])
    stored = hook.at(0)
    for name, p in ref.state_dict().items():
        assert torch.equal(stored[name], p), name
    sciprune.prune(model, "magnitude", 0.6)
    masks = get_masks(model)
    rewind(model, stored)
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        w = params[name].detach()
        assert torch.equal(w[keep], stored[name][keep])
        assert bool((w[~keep] == 0).all()) and not bool(torch.signbit(w[~keep]).any())  # +0 exactly
    for name in ("linear0.bias", "linear2.bias"):
        assert torch.equal(params[name].detach(), stored[name])


def test_rewind_zeroes_masked_biases_and_refuses_a_misfit():
    model = _model()
    stored = snapshot(model)
    sciprune.prune(model, "neuron-magnitude", 0.25)
    rewind(model, stored)
    for p, m in mask_pairs(model):
        assert bool((p.detach()[~m] == 0).all()) and torch.equal(p.detach()[m], stored[_name(model, p)][m])
    with pytest.raises(SciPruneError) as e:
        rewind(model, {k: v for k, v in stored.items() if k != "linear1.weight"})
    _one_line(e)


def _name(model, p):
    return next(n for n, q in model.named_parameters() if q is p)


def test_rewind_hook_per_member_under_fit_many_equals_fit():
    X, Y = _data()
    datas = [(X, Y), _data(1, noise=0.1)]
    models = [_model(1), _model(2)]
    refs = copy.deepcopy(models)
    hook = Rewind(5)
    sciprune.ensemble.fit_many(models, datas, CFG, hooks=[hook])
    for i, (ref, d) in enumerate(zip(refs, datas)):
        one = Rewind(5)
        fit(ref, d, CFG, hooks=[one])
        for name, v in one.at(0).items():
            torch.testing.assert_close(hook.at(i)[name], v, rtol=0, atol=1e-12)


def test_rewind_step_beyond_the_training_is_refused():
    X, Y = _data()
    with pytest.raises(SciPruneError) as e:
        fit(_model(), (X, Y), CFG, hooks=[Rewind(10)])  # T = 9
    _one_line(e)
    assert check_rewind_step(8, CFG, N) == 8
    for bad in (9, 10, -1, 1.5, True, "3", None):
        with pytest.raises(SciPruneError) as e:
            check_rewind_step(bad, CFG, N)
        _one_line(e)
    with pytest.raises(SciPruneError, match="plateau"):
        check_rewind_step(1, TrainConfig(lr_schedule="plateau", epochs=3), N)


# --- the retraining budget and the learning rate resumed at step k --------------------------------------------


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
@pytest.mark.parametrize("k", [0, 2, 3, 7])
def test_retraining_resumes_the_run_at_step_k(schedule, k):
    """The retraining's step j has the learning rate of step k + j of the original run, T - k steps in
    all; with plain SGD from the step-k weights it is the original run from step k, bit for bit (the
    mini-batch order continues too: TrainConfig.start_step)."""
    X, Y = _data()
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, lr=0.05, epochs=3, batch_size=16, lr_schedule=schedule,
                      step_size=1, gamma=0.3)
    orig, hook, model = LRs(), Rewind(k), _model()
    fit(model, (X, Y), cfg, hooks=[orig, hook])
    assert len(orig.lrs) == 9
    again, resumed = LRs(), _model()
    resumed.load_state_dict(hook.at(0))
    fit(resumed, (X, Y), resume_config(cfg, N, k), hooks=[again])
    assert again.lrs == orig.lrs[k:]
    for a, b in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_retraining_from_zero_is_a_fresh_fit():
    assert resume_config(CFG, N, 0) is CFG


# --- lottery_ticket -------------------------------------------------------------------------------------------


def _counts(n: int, f: float, target: float) -> list[int]:
    """open_lth's count rule by hand: c_L = c_{L-1} + ceil(f (n - c_{L-1})) below the target count."""
    final, out, c = math.floor(target * n + 0.5), [], 0
    while True:
        c += math.ceil(f * (n - c))
        if c >= final:
            return out + [final]
        out.append(c)


def _magnitude_masks(model, pool, count):
    """The ``count`` smallest |w| of the pool, already-pruned first (brute force over a Python list)."""
    params, masks = dict(model.named_parameters()), get_masks(model, names=pool)
    entries = []
    for name in pool:
        w, m = params[name].detach().flatten(), masks[name].flatten()
        entries += [(bool(m[j]), abs(float(w[j])), name, j) for j in range(w.numel())]
    entries.sort(key=lambda e: (e[0], e[1]))  # dead first, then by magnitude
    keep = {n: torch.ones(params[n].numel(), dtype=torch.bool) for n in pool}
    for _, _, name, j in entries[:count]:
        keep[name][j] = False
    return {n: keep[n].view_as(params[n]) for n in pool}


@pytest.mark.parametrize("k", [0, 4])
def test_lottery_ticket_equals_a_hand_written_loop(k):
    X, Y = _data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, epochs=3, batch_size=16, lr_schedule="cosine")
    model, ref = _model(), _model()
    seen = []
    res = lottery_ticket(model, (X, Y), cfg, target=0.7, rewind_step=k, exclude=["output"],
                         on_level=lambda m, lv: seen.append((lv.level, copy.deepcopy(m))))
    pool = ["linear0.weight", "linear1.weight"]
    assert res.pool == pool
    n = 3 * 8 + 8 * 8
    counts = _counts(n, 0.2, 0.7)
    assert [lv.report.pruned for lv in res.levels[1:]] == counts
    # by hand: dense run storing step k, then per level: brute-force magnitude mask, rewind, retrain
    hook = Rewind(k)
    fit(ref, (X, Y), cfg, hooks=[hook])
    assert all(torch.equal(res.rewind_state[n_], v) for n_, v in hook.at(0).items())
    for level, c in enumerate(counts, start=1):
        sciprune.set_masks(ref, _magnitude_masks(ref, pool, c))
        rewind(ref, hook.at(0))
        fit(ref, (X, Y), resume_config(cfg, N, k))
        got = seen[level][1]
        for (name, a), b in zip(got.named_parameters(), ref.parameters()):
            assert torch.equal(a, b), (level, name)
    assert torch.equal(get_masks(model)["linear2.weight"], torch.ones(1, 8, dtype=torch.bool))  # excluded


def test_per_level_sparsity_follows_the_ceil_rule_and_one_minus_point_eight_to_the_level():
    X, Y = _data()
    cfg = TrainConfig(optimizer="sgd", lr=0.05, epochs=1, batch_size=None)
    model = sciprune.MLP(3, [16, 16], 1, "relu", seed=3).to(DT)
    res = lottery_ticket(model, (X, Y), cfg, target=0.9)
    n = 3 * 16 + 16 * 16 + 16
    pruned = [lv.report.pruned for lv in res.levels[1:]]
    assert pruned == _counts(n, 0.2, 0.9)
    for L, c in enumerate(pruned[:-1], start=1):
        assert c / n >= 1 - 0.8**L and c / n - (1 - 0.8**L) < L / n  # each ceil adds less than one weight
        assert res.levels[L].sparsity == c / n
    assert pruned[-1] == math.floor(0.9 * n + 0.5)
    assert res.levels[-1].sparsity == pytest.approx(0.9, abs=0.5 / n)


def test_lottery_ticket_is_deterministic_and_ranks_by_any_criterion():
    X, Y = _data()
    runs = []
    for method in ("magnitude", "magnitude", "random"):
        m = _model()
        lottery_ticket(m, (X, Y), CFG, target=0.5, method=method, seed=2)
        runs.append(m)
    for a, b in zip(runs[0].parameters(), runs[1].parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(get_masks(runs[0])["linear1.weight"], get_masks(runs[2])["linear1.weight"])


def test_lottery_tickets_equal_per_member_runs_in_float64():
    datas = [_data(0, 0.0), _data(1, 0.05), _data(2, 0.1)]
    cfgs = [TrainConfig(optimizer="adam", lr=1e-2, epochs=3, batch_size=16, lr_schedule="step", step_size=1,
                        gamma=0.5, seed=s) for s in (0, 1, 2)]
    models = [_model(10 + i, "tanh") for i in range(3)]
    refs = copy.deepcopy(models)
    res = lottery_tickets(models, datas, cfgs, target=0.6, rewind_step=5, exclude=["output"], max_members=2)
    for i, ref in enumerate(refs):
        one = lottery_ticket(ref, datas[i], cfgs[i], target=0.6, rewind_step=5, exclude=["output"])
        assert len(one.levels) == len(res[i].levels)
        for a, b in zip(one.levels, res[i].levels):
            assert a.sparsity == b.sparsity
            assert math.isclose(a.train_loss, b.train_loss, rel_tol=1e-10)
        assert all(torch.equal(a, b) for a, b in zip(get_masks(ref).values(), get_masks(models[i]).values()))
        for a, b in zip(ref.parameters(), models[i].parameters()):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


# --- the random controls --------------------------------------------------------------------------------------


def test_reinitialize_keeps_the_masks_and_draws_new_seeded_weights():
    model = _model()
    sciprune.prune(model, "magnitude", 0.7)
    masks, before = get_masks(model), snapshot(model)
    rng = torch.get_rng_state()
    twin = copy.deepcopy(model)
    reinitialize(model, 7)
    reinitialize(twin, 7)
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left alone
    params = dict(model.named_parameters())
    for name, keep in masks.items():
        w = params[name].detach()
        assert torch.equal(get_masks(model)[name], keep)
        assert bool((w[~keep] == 0).all())
        assert bool((w[keep] != before[name][keep]).all())
        bound = 1 / math.sqrt(w.shape[1])  # nn.Linear's U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        assert float(w.abs().max()) <= bound
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), twin.parameters()))
    other = copy.deepcopy(twin)
    reinitialize(other, 8)
    assert not torch.equal(other.linear1.weight, twin.linear1.weight)


@pytest.mark.parametrize("strategy", ["layerwise", "global"])
def test_random_mask_matches_the_counts_of_the_ticket(strategy):
    ticket = _model()
    sciprune.prune(ticket, "magnitude", 0.6)
    like = get_masks(ticket)
    a, b, c = _model(5), _model(5), _model(5)
    n = random_mask(a, like, 3, strategy=strategy)
    random_mask(b, like, 3, strategy=strategy)
    random_mask(c, like, 4, strategy=strategy)
    ma, mb, mc = get_masks(a), get_masks(b), get_masks(c)
    assert n == sum(int((~m).sum()) for m in like.values())
    if strategy == "layerwise":
        assert all(int((~ma[k]).sum()) == int((~like[k]).sum()) for k in like)
    assert all(torch.equal(ma[k], mb[k]) for k in like)
    assert any(not torch.equal(ma[k], mc[k]) for k in like)
    assert any(not torch.equal(ma[k], like[k]) for k in like)
    with pytest.raises(SciPruneError) as e:
        random_mask(a, like, 3)  # already pruned
    _one_line(e)


# --- bad input: one line, before any training -------------------------------------------------------------------


@pytest.mark.parametrize("kwargs", [
    {"fraction": 0.0}, {"fraction": 1.0}, {"fraction": -0.1}, {"fraction": float("nan")}, {"fraction": "0.2"},
    {"rewind_step": -1}, {"rewind_step": 9}, {"rewind_step": 100}, {"rewind_step": 2.0},
    {"target": 1.0}, {"target": -0.5}, {"scope": "row"}, {"exclude": ["linear9.weight"]}, {"exclude": "output"},
    {"exclude": ["linear0.weight", "linear1.weight", "output"]}, {"method": "nope"}, {"method": "neuron-magnitude"},
    {"names": ["linear0.weight"]}, {"colour": 1},
])
def test_bad_input_is_one_line_before_training(kwargs):
    X, Y = _data()
    model = _model()
    before = snapshot(model)
    args = {"target": 0.5, **kwargs}
    with pytest.raises(SciPruneError) as e:
        lottery_ticket(model, (X, Y), CFG, **args)
    _one_line(e)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(SciPruneError):
        lottery_tickets([_model(), _model(2)], (X, Y), CFG, **args)


def test_bad_configs_are_refused():
    X, Y = _data()
    for cfg in (TrainConfig(epochs=3, patience=2), TrainConfig(epochs=3, lr_schedule="plateau")):
        with pytest.raises(SciPruneError) as e:
            lottery_ticket(_model(), (X, Y), cfg, target=0.5, rewind_step=1, val=(X, Y))
        _one_line(e)
    twice = _model()
    with pytest.raises(SciPruneError, match="distinct"):
        lottery_tickets([twice, twice], (X, Y), CFG, target=0.5)
    with pytest.raises(SciPruneError, match="more than seed"):
        lottery_tickets([_model(), _model(2)], (X, Y), [CFG, TrainConfig(epochs=2)], target=0.5)
