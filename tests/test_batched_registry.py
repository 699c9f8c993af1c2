"""A criterion's batched path is registered in its own module: ``prune_ensemble`` uses it when there is
one (member by member equal to the single-model loop), and the per-member loop otherwise.

Throwaway criteria are registered inside :func:`restoring_registry`, which forgets them afterwards.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_close

import sciprune
from sciprune import criteria
from sciprune.criteria._registry import ScoreResult, register, register_batched, restoring_registry
from sciprune.ensemble import prune_ensemble, score_ensemble
from sciprune.masks import get_masks

DT = torch.float64
M = 3


def _members(own_x: bool):
    g = torch.Generator().manual_seed(0)
    models = [sciprune.MLP(2, [5, 4], 2, "tanh", seed=m).to(DT) for m in range(M)]
    X = torch.rand(60, 2, generator=g, dtype=DT) * 2 - 1
    datas = []
    for _ in range(M):
        Xm = torch.rand(60, 2, generator=g, dtype=DT) * 2 - 1 if own_x else X
        datas.append((Xm, torch.sin(3 * Xm[:, :1]).repeat(1, 2)))
    return models, datas


def _register_toy(name: str, calls: list, *, batched: bool, decline: bool = False) -> None:
    """``alpha |W| E[x^2]`` (the mean square input of the member's data): loop and batched forms."""

    @register(name, summary="test only", needs_data=True, options={"alpha": "float"})
    def toy(model, batches, names, generator, *, alpha=1.0):
        calls.append("compute")
        sq, count = 0.0, 0
        for X, _ in batches:
            sq, count = sq + float((X * X).sum()), count + X.numel()
        params = dict(model.named_parameters())
        return ScoreResult({n: alpha * params[n].detach().abs() * (sq / count) for n in names})

    if batched:
        @register_batched(name)
        def toy_batched(stack, *, alpha=1.0):
            calls.append("batched")
            if decline:
                return None
            X = stack.data.X
            ms = (X * X).mean(dim=(-2, -1)) * torch.ones(stack.M, dtype=X.dtype)  # (M,) shared or not
            return ScoreResult({n: alpha * stack.params[n].abs() * ms.view(-1, 1, 1) for n in stack.names})


def _assert_equals_loop(models, refs, datas, name, ratios, reports, **options):
    for m, (model, ref) in enumerate(zip(models, refs)):
        rep = sciprune.prune(ref, name, ratios[m], datas[m], seed=m, **options)
        assert reports[m] == rep
        assert all(torch.equal(get_masks(model)[n], get_masks(ref)[n]) for n in get_masks(ref))
        for k, v in ref.state_dict().items():
            assert_close(model.state_dict()[k], v, rtol=1e-12, what=f"member {m} {k}")


@pytest.mark.parametrize("own_x", [False, True], ids=["shared-X", "own-X"])
def test_registered_batched_path_is_used_and_equals_the_loop(own_x):
    calls: list = []
    with restoring_registry():
        _register_toy("test-toy", calls, batched=True)
        assert "test-toy" in sciprune.ensemble.BATCHED_METHODS  # derived from the registry
        models, datas = _members(own_x)
        refs = [copy.deepcopy(m) for m in models]
        ratios = [0.3, 0.5, 0.7]
        reports = prune_ensemble(models, "test-toy", ratios, datas, seeds=[0, 1, 2], alpha=2.5)
        assert calls == ["batched"]  # one batched call, no per-member compute
        _assert_equals_loop(models, refs, datas, "test-toy", ratios, reports, alpha=2.5)
    assert "test-toy" not in criteria.available()
    assert "test-toy" not in sciprune.ensemble.BATCHED_METHODS


@pytest.mark.parametrize("batched,decline", [(False, False), (True, True)], ids=["no-batched", "declines"])
def test_without_batched_path_the_loop_runs(batched, decline):
    calls: list = []
    with restoring_registry():
        _register_toy("test-toy", calls, batched=batched, decline=decline)
        assert ("test-toy" in sciprune.ensemble.BATCHED_METHODS) == batched
        models, datas = _members(True)
        refs = [copy.deepcopy(m) for m in models]
        reports = prune_ensemble(models, "test-toy", 0.5, datas, seeds=[0, 1, 2])
        assert calls == ["batched"] * batched + ["compute"] * M
        _assert_equals_loop(models, refs, datas, "test-toy", [0.5] * M, reports)


def test_neuron_criterion_batched_gets_the_hidden_layers():
    """A neuron criterion's batched path scores the hidden layers' weights: (M, out) per name."""
    with restoring_registry():
        @register("test-row-l1", summary="test only", needs_data=False, granularity="neuron")
        def row_l1(model, batches, names, generator, **options):
            params = dict(model.named_parameters())
            return ScoreResult({n: params[n].detach().abs().sum(1) for n in names})

        seen = []

        @register_batched("test-row-l1")
        def row_l1_batched(stack, **options):
            seen.append((list(stack.names), stack.data))
            return ScoreResult({n: stack.params[n].abs().sum(-1) for n in stack.names})

        models, datas = _members(False)
        got = score_ensemble(models, "test-row-l1")
        assert seen == [(["linear0.weight", "linear1.weight"], None)]
        for m, model in enumerate(models):
            ref = sciprune.pruning.score_result(model, "test-row-l1")
            assert list(got[m].scores) == list(ref.scores)
            for n in ref.scores:
                assert_close(got[m].scores[n], ref.scores[n], rtol=1e-14, what=n)
        refs = [copy.deepcopy(m) for m in models]
        reports = prune_ensemble(models, "test-row-l1", 0.5, scope="layer")
        for m, (model, ref) in enumerate(zip(models, refs)):
            assert reports[m] == sciprune.prune(ref, "test-row-l1", 0.5, scope="layer")
            assert all(torch.equal(get_masks(model)[n], get_masks(ref)[n]) for n in get_masks(ref))


def test_register_batched_refuses_unknown_and_twice():
    with restoring_registry():
        with pytest.raises(RuntimeError, match="register it before"):
            register_batched("test-missing")(lambda stack: None)
        with pytest.raises(RuntimeError, match="twice"):
            register_batched("magnitude")(lambda stack: None)  # magnitude has one already
    assert criteria.get("magnitude").batched is not None
