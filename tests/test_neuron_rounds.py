"""Algorithm 2 (neuron pruning in rounds, compacted after each): the compact network it returns equals the
same algorithm run on the full-size network with masks and no compaction (float64), for taylor-neuron on
the plain loss and hgnp with the flatness penalty; exact final counts; one-line refusals."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch

import sciprune
from helpers import assert_close
from malformed import assert_raises_user_error
from sciprune.flatness import FlatnessPenalty
from sciprune.neuron_rounds import Rounds, prune_in_rounds
from sciprune.neurons import hidden_layers, neuron_sparsity
from sciprune.pruning import apply_plan, plan
from sciprune.training import _make_optimizer

F64 = torch.float64


def _data(classes=False):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(60, 3, generator=g, dtype=F64)
    Y = torch.randint(0, 3, (60,), generator=g) if classes else torch.sin(X.sum(1, keepdim=True))
    return X, Y


def _masked_reference(model, method, target, data, rounds, cfg, hooks, **options):
    """Algorithm 2 without compaction: masks on the full-size network, one optimiser throughout."""
    ref = copy.deepcopy(model)
    opt = _make_optimizer(ref.parameters(), cfg)
    phase = 0

    def train(epochs):
        nonlocal phase
        if epochs:
            sciprune.fit(ref, data, replace(cfg, epochs=epochs, seed=cfg.seed + phase), hooks=hooks, optimizer=opt)
        phase += 1

    total = neuron_sparsity(ref)["neurons"]["total"]
    goal = math.floor(target * total + 0.5)
    train(rounds.pre_epochs)
    removed, k = 0, 0
    while removed < goal:
        p = min(rounds.per_round, goal - removed)
        apply_plan(ref, plan(ref, method, data, seed=cfg.seed + k, **options), (removed + p) / total)
        removed, k = removed + p, k + 1
        train(rounds.between_epochs if removed < goal else rounds.finetune_epochs)
    return ref


@pytest.mark.parametrize("method,classes,penalty,opt", [("taylor-neuron", False, None, "adam"),
                                                        ("hgnp", True, (0.05, 0.0), "sgd"),
                                                        ("hgnp", False, (1e-3, 0.0), "adam")])
def test_rounds_with_compaction_equal_rounds_with_masks(method, classes, penalty, opt):
    X, Y = _data(classes)
    act = "relu" if classes else "tanh"
    model = sciprune.MLP(3, [8, 7], 3 if classes else 1, act, seed=2).double()
    cfg = sciprune.TrainConfig(optimizer=opt, lr=1e-2, batch_size=20, seed=3)
    rounds = Rounds(per_round=4, pre_epochs=2, between_epochs=1, finetune_epochs=2)
    opts = {"batch_size": 20} | ({"mu": penalty[0], "K": penalty[1]} if method == "hgnp" else {})
    # refresh=1: the compact run recomputes v when the shapes change, the masked one only when it is due
    hooks = (lambda: [FlatnessPenalty(*penalty, refresh=1)]) if penalty else (lambda: None)
    res = prune_in_rounds(model, method, 0.6, (X, Y), rounds=rounds, config=cfg, hooks=hooks(), **opts)
    ref = _masked_reference(model, method, 0.6, (X, Y), rounds, cfg, hooks(), **opts)
    assert res.removed == 9 and res.total == 15 and res.widths[-1] == [int(k.numel()) for k in res.kept.values()]
    assert [sum(w) for w in res.widths] == [11, 7, 6]
    assert_close(res.model(X), ref(X), rtol=1e-8)
    assert_close(res.model(X), sciprune.compact(ref)(X), rtol=1e-8)
    for name, k in res.kept.items():  # the kept neurons are those the masked run kept
        alive = torch.nonzero(sciprune.get_masks(ref)[name].any(dim=1)).flatten()
        assert torch.equal(k, alive)


def test_the_starting_network_is_left_as_it_was_and_target_zero_only_trains():
    X, Y = _data()
    model = sciprune.MLP(3, [5], 1, "tanh", seed=0).double()
    before = copy.deepcopy(model.state_dict())
    res = prune_in_rounds(model, "neuron-magnitude", 0.0, (X, Y), rounds=Rounds(per_round=2, finetune_epochs=1),
                          config=sciprune.TrainConfig(epochs=1, lr=1e-2))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert res.removed == 0 and len(res.histories) == 1


def test_refusals():
    X, Y = _data()
    model = sciprune.MLP(3, [4, 4], 1, "tanh", seed=0).double()
    r, cfg = Rounds(per_round=1), sciprune.TrainConfig(epochs=1)
    assert_raises_user_error(lambda: prune_in_rounds(model, "magnitude", 0.5, (X, Y), rounds=r, config=cfg), "neuron criterion")
    assert_raises_user_error(lambda: prune_in_rounds(model, "taylor-neuron", 0.5, (X, Y), rounds=r,
                                                     config=replace(cfg, lr_schedule="cosine")), "constant")
    assert_raises_user_error(lambda: prune_in_rounds(model, "taylor-neuron", 0.95, (X, Y), rounds=r, config=cfg),
                             "0.95")
    assert_raises_user_error(lambda: Rounds(per_round=0), "per_round")
    assert_raises_user_error(lambda: Rounds.from_dict({"per_round": 2, "every": 3}), "every")
    assert_raises_user_error(lambda: Rounds.from_dict({"pre_epochs": 2}), "per_round")


from hypothesis import assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(2, 9), min_size=1, max_size=3), target=st.sampled_from([0.2, 0.5, 0.8]),
       per_round=st.integers(1, 7))
def test_layer_scope_rounds_take_the_same_share_of_every_layer(widths, target, per_round):
    assume(all(math.floor(target * n + 0.5) < n for n in widths))  # else refused: it would empty a layer
    X, Y = _data()
    model = sciprune.MLP(3, widths, 1, "tanh", seed=1).double()
    seen = []
    res = prune_in_rounds(model, "neuron-magnitude", target, (X, Y), config=sciprune.TrainConfig(lr=1e-3),
                          rounds=Rounds(per_round=per_round, between_epochs=0, scope="layer"),
                          on_round=lambda m, k: seen.append(k))
    N0 = sum(widths)
    for k, w in enumerate(res.widths):
        share = min(target, (k + 1) * per_round / N0)
        assert w == [n - math.floor(share * n + 0.5) for n in widths], (k, w)
    final = [n - math.floor(target * n + 0.5) for n in widths]
    assert [h.size for h in hidden_layers(res.model)] == final and res.removed == sum(widths) - sum(final)
    assert seen == list(range(len(res.widths)))
