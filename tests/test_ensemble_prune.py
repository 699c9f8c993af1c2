"""Batched scoring and pruning of ensemble members equals per-member ``score_result`` / ``prune`` (float64).

Pairs as in BackPACK's tests: the single-model library call (the reference) and the batched one,
compared member by member over a shared list of small problems.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st

import sciprune
from sciprune.ensemble import BATCHED_METHODS, prune_ensemble, score_ensemble
from sciprune.ensemble import _prune as ens_prune
from sciprune.errors import SciPruneError
from sciprune.masks import get_masks, set_masks
from sciprune.pruning import score_result

DT = torch.float64
RTOL = 1e-10

# (widths, activation, outputs, own inputs per member, integer labels)
PROBLEMS = [
    ([], "tanh", 1, False, False),
    ([6], "tanh", 1, False, False),
    ([7, 5], "relu", 3, True, False),
    ([5, 6, 4], "tanh", 3, False, True),
    ([8, 8], "relu", 1, True, False),
    ([6, 5], "gelu", 2, False, False),
    ([5], "sin", 1, True, False),
]
IDS = ["linear", "1x6-tanh-K1", "7-5-relu-K3-ownX", "5-6-4-tanh-labels", "8-8-relu-K1-ownX", "6-5-gelu-K2", "5-sin-K1-ownX"]


def _problem(widths, act, K, own_x, labels, *, M=3, n=120, masked=False, seed=0):
    """M members (own weights, own targets, optionally own inputs and prior masks) and their data."""
    g = torch.Generator().manual_seed(seed)
    models = [sciprune.MLP(2, widths, K, act, seed=seed * 100 + m).to(DT) for m in range(M)]
    X = torch.rand(n, 2, generator=g, dtype=DT) * 2 - 1
    datas = []
    for _ in range(M):
        Xm = torch.rand(n, 2, generator=g, dtype=DT) * 2 - 1 if own_x else X
        if labels:
            Y = torch.randint(0, K, (n,), generator=g)
        else:
            Y = torch.sin(3 * Xm[:, :1]) + 0.1 * torch.randn(n, K, generator=g, dtype=DT)
        datas.append((Xm, Y))
    if masked:  # a different prior mask per member, including a dead neuron's worth of weights
        for m, model in enumerate(models):
            sciprune.prune(model, "random" if m % 2 else "magnitude", 0.2 + 0.1 * m, seed=m)
        if widths:  # member 0: hidden neuron 0 of the first layer feeds nothing (G = 0: the S0 = 0 branch)
            keep = torch.ones(models[0].linear1.weight.shape, dtype=torch.bool)
            keep[:, 0] = False
            set_masks(models[0], {"linear1.weight": keep})
    return models, datas


@pytest.fixture
def no_loop(monkeypatch):
    """Fail if the batched path falls back to the per-member loop."""
    def boom(*a, **k):
        raise AssertionError("the per-member loop ran for a batched method")
    monkeypatch.setattr(ens_prune, "score_result", boom)
    monkeypatch.setattr(ens_prune, "ec_shifts", boom)


@pytest.mark.parametrize("masked", [False, True], ids=["dense", "masked"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=IDS)
@pytest.mark.parametrize("method", BATCHED_METHODS)
def test_scores_equal_per_member(method, problem, masked, no_loop):
    models, datas = _problem(*problem, masked=masked)
    seeds = [3, 11, 7]
    refs = [score_result(m, method, d, seed=s) for m, d, s in zip(models, datas, seeds)]
    before = [copy.deepcopy(m.state_dict()) for m in models]
    got = score_ensemble(models, method, datas, seeds=seeds)
    assert len(got) == len(models)
    for m, (r, ref) in enumerate(zip(got, refs)):
        assert list(r.scores) == list(ref.scores)
        for n in ref.scores:
            assert r.scores[n].shape == ref.scores[n].shape and r.scores[n].dtype == ref.scores[n].dtype
            assert_close(r.scores[n], ref.scores[n], rtol=RTOL, what=f"member {m} scores {n}")
        assert (r.bias_shifts is None) == (ref.bias_shifts is None)
        for n in ref.bias_shifts or {}:
            assert_close(r.bias_shifts[n], ref.bias_shifts[n], rtol=RTOL, what=f"member {m} shifts {n}")
    for model, sd in zip(models, before):  # scoring leaves the members untouched
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())
        assert all(p.grad is None for p in model.parameters())


def test_shared_data_and_seed_and_chunks(no_loop):
    """One shared (X, Y), one shared seed, and chunking by batch_size give the per-member result."""
    models, datas = _problem([9, 9], "tanh", 2, False, False, M=4, n=257)
    for method in ("ec", "gradient", "random"):
        got = score_ensemble(models, method, datas[0], seeds=5, batch_size=50)
        for m, model in enumerate(models):
            ref = score_result(model, method, datas[0], seed=5)
            for n in ref.scores:
                assert_close(got[m].scores[n], ref.scores[n], rtol=RTOL, what=f"{method} member {m} {n}")


def test_names_option(no_loop):
    models, datas = _problem([6, 5], "tanh", 1, False, False)
    got = score_ensemble(models, "ec", datas, names=["linear1.weight"])
    ref = score_result(models[1], "ec", datas[1], names=["linear1.weight"])
    assert list(got[1].scores) == ["linear1.weight"]
    assert_close(got[1].scores["linear1.weight"], ref.scores["linear1.weight"], rtol=RTOL, what="names")


@pytest.mark.parametrize("method,options", [("ec-exact", {}), ("ec", {"probes": 2}), ("taylor-output", {"probes": 3})])
def test_other_methods_fall_back_to_the_loop(method, options):
    models, datas = _problem([5], "tanh", 2, False, False, M=2, n=40)
    got = score_ensemble(models, method, datas, seeds=[1, 2], **options)
    for m, model in enumerate(models):
        ref = score_result(model, method, datas[m], seed=m + 1, **options)
        for n in ref.scores:
            assert torch.equal(got[m].scores[n], ref.scores[n])


def test_batch_iterable_data_falls_back():
    models, datas = _problem([5], "tanh", 1, False, False, M=2, n=40)
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(*datas[0]), batch_size=16)  # not a list: a list means one entry per member
    got = score_ensemble(models, "gradient", loader)
    for m, model in enumerate(models):
        ref = score_result(model, "gradient", loader)
        for n in ref.scores:
            assert_close(got[m].scores[n], ref.scores[n], rtol=RTOL, what="loader")


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("compensate", [None, True, False], ids=["own", "ec-shifts", "none"])
@pytest.mark.parametrize("method", BATCHED_METHODS)
def test_prune_equals_per_member_prune(method, compensate, scope, no_loop):
    models, datas = _problem([7, 6], "tanh", 2, True, False, masked=True, seed=1)
    refs = [copy.deepcopy(m) for m in models]
    ratios, seeds = [0.35, 0.5, 0.8], [0, 4, 9]
    reports = prune_ensemble(models, method, ratios, datas, scope=scope, compensate=compensate, seeds=seeds)
    for m, (model, ref) in enumerate(zip(models, refs)):
        rep = sciprune.prune(ref, method, ratios[m], datas[m], scope=scope, compensate=compensate, seed=seeds[m])
        assert reports[m] == rep
        mk, rk = get_masks(model), get_masks(ref)
        assert all(torch.equal(mk[n], rk[n]) for n in rk), f"member {m}: masks differ"
        sd, rsd = model.state_dict(), ref.state_dict()
        for k in rsd:
            assert torch.allclose(sd[k], rsd[k], rtol=0, atol=1e-12), f"member {m}: {k} differs"


def _n_weights(model) -> int:
    return sum(get_masks(model)[n].numel() for n in get_masks(model))


@settings(max_examples=15, deadline=None)
@given(st.lists(st.floats(0.0, 0.99), min_size=1, max_size=4), st.sampled_from(["ec", "gradient", "magnitude"]))
def test_achieved_sparsity_is_exact_per_member(ratios, method):
    models, datas = _problem([6, 5], "tanh", 1, False, False, M=len(ratios), n=30)
    reports = prune_ensemble(models, method, ratios, datas)
    n = _n_weights(models[0])
    for r, rep, model in zip(ratios, reports, models):
        k = math.floor(r * n + 0.5)
        assert rep.pruned == k and rep.total == n
        assert sum(int((~v).sum()) for v in get_masks(model).values()) == k


def test_ratios_as_array_and_shared_ratio():
    import numpy as np

    models, datas = _problem([6], "tanh", 1, False, False, M=3, n=30)
    n = _n_weights(models[0])
    assert [r.pruned for r in prune_ensemble(models, "magnitude", np.array([0.1, 0.2, 0.3]))] == \
        [math.floor(r * n + 0.5) for r in (0.1, 0.2, 0.3)]
    assert [r.pruned for r in prune_ensemble(models, "ec", 0.5, datas[0])] == [math.floor(0.5 * n + 0.5)] * 3


def test_masks_only_shrink_on_a_second_call():
    models, datas = _problem([6, 6], "relu", 1, False, False, M=3)
    prune_ensemble(models, "ec", [0.5, 0.2, 0.6], datas, seeds=[0, 1, 2])
    first = [get_masks(m) for m in models]
    # lower or higher ratios the second time: pruned weights stay pruned, and stay zero
    reports = prune_ensemble(models, "gradient", [0.3, 0.4, 0.7], datas, scope="layer")
    n = _n_weights(models[0])
    for m, (model, old) in enumerate(zip(models, first)):
        new = get_masks(model)
        for name in old:
            assert not (new[name] & ~old[name]).any(), f"member {m}: a pruned weight came back in {name}"
            assert (dict(model.named_parameters())[name][~new[name]] == 0).all()
        assert reports[m].pruned >= n - sum(int(v.sum()) for v in old.values())


def test_errors():
    models, datas = _problem([5], "tanh", 1, False, False, M=2, n=20)
    other = sciprune.MLP(2, [6], 1, "tanh", seed=0).to(DT)
    with pytest.raises(SciPruneError, match="one architecture"):
        score_ensemble([models[0], other], "ec", datas)
    with pytest.raises(SciPruneError, match="2 entries for 3 members"):
        score_ensemble([*models, copy.deepcopy(models[0])], "ec", datas)
    with pytest.raises(SciPruneError, match="ratios .* 3 entries for 2 members"):
        prune_ensemble(models, "ec", [0.1, 0.2, 0.3], datas)
    with pytest.raises(SciPruneError, match="ratio must be in"):
        prune_ensemble(models, "ec", [0.1, 1.0], datas)
    with pytest.raises(SciPruneError, match="seeds"):
        score_ensemble(models, "random", seeds=[1])
    with pytest.raises(SciPruneError, match="use seeds="):
        score_ensemble(models, "random", seed=1)
    with pytest.raises(SciPruneError, match="unknown option"):
        score_ensemble(models, "magnitude", probes=3)
    with pytest.raises(SciPruneError, match="needs data"):
        score_ensemble(models, "ec")
    with pytest.raises(SciPruneError, match="compensate=True"):
        prune_ensemble(models, "magnitude", 0.5, compensate=True)
    with pytest.raises(SciPruneError, match="scope"):
        prune_ensemble(models, "magnitude", 0.5, scope="neuron")
    with pytest.raises(SciPruneError, match="empty"):
        score_ensemble([], "magnitude")
    with pytest.raises(SciPruneError, match="at least one weight"):
        score_ensemble(models, "ec", datas, names=[])
    with pytest.raises(SciPruneError, match="not Linear weights"):
        score_ensemble(models, "ec", datas, names=["linear0.bias"])
    assert all(get_masks(m)["linear0.weight"].all() for m in models)  # nothing was pruned by the failures


class _Wrapped(torch.nn.Module):
    """Not an nn.Sequential: the batched path does not apply, the per-member loop does."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.body = sciprune.MLP(2, [5], 1, "tanh", seed=seed).to(DT)

    def forward(self, x):
        return self.body(x)


def test_non_chain_models_use_the_loop():
    models = [_Wrapped(s) for s in range(2)]
    refs = [copy.deepcopy(m) for m in models]
    prune_ensemble(models, "magnitude", [0.3, 0.6])
    for m, r, ratio in zip(models, refs, [0.3, 0.6]):
        sciprune.prune(r, "magnitude", ratio)
        assert all(torch.equal(a, b) for a, b in zip(get_masks(m).values(), get_masks(r).values()))
