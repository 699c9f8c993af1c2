"""Compaction in the training loop: the compact network with the optimiser state that follows it trains
exactly as the masked full-size network does (float64), for Adam, AdamW with weight decay and SGD with
momentum; kept indices name the surviving neurons; fit(optimizer=...) and L-BFGS refused in one line."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sciprune
from helpers import assert_close
from malformed import assert_raises_user_error
from sciprune.compact_training import compact_in_training
from sciprune.compaction import compact_kept
from sciprune.neurons import alive_neurons, hidden_layers
from sciprune.training import _make_optimizer

F64 = torch.float64


def _data(seed=0, n=40):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)


@pytest.mark.parametrize("optimizer,wd", [("adam", 0.0), ("adamw", 1e-2), ("sgd", 0.0), ("sgd", 1e-3)])
def test_compact_network_trains_as_the_masked_one(optimizer, wd):
    X, Y = _data()
    model = sciprune.MLP(3, [6, 5], 2, "tanh", seed=1).double()
    cfg = sciprune.TrainConfig(optimizer=optimizer, lr=1e-2, epochs=3, batch_size=16, weight_decay=wd)
    opt = _make_optimizer(model.parameters(), cfg)
    sciprune.fit(model, (X, Y), cfg, optimizer=opt)
    sciprune.prune(model, "neuron-magnitude", 0.4)
    small, small_opt, kept = compact_in_training(model, opt)
    assert_close(small(X), model(X), rtol=1e-12)  # right after compaction: the masked network's outputs
    assert [int(k.numel()) for k in kept] == [h.size for h in hidden_layers(small)]
    old, new = dict(model.named_parameters()), dict(small.named_parameters())
    rows = {"linear0": kept[0], "linear1": kept[1], "linear2": None}
    cols = {"linear0": None, "linear1": kept[0], "linear2": kept[1]}
    for name, p in new.items():  # the kept neurons' optimiser state, carried over exactly
        layer, kind = name.split(".")
        ref = {k: v for k, v in opt.state[old[name]].items()}
        for key, value in small_opt.state[p].items():
            expected = ref[key]
            if torch.is_tensor(expected) and expected.shape == old[name].shape:
                if rows[layer] is not None:
                    expected = expected[rows[layer]]
                if kind == "weight" and cols[layer] is not None:
                    expected = expected[:, cols[layer]]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(expected)), (name, key)
    alive = alive_neurons(model, [h.weight for h in hidden_layers(model)])
    for k, a in zip(kept, alive.values()):
        assert torch.equal(k, torch.nonzero(a).flatten())
    sciprune.fit(model, (X, Y), cfg, optimizer=opt)
    sciprune.fit(small, (X, Y), cfg, optimizer=small_opt)
    assert_close(small(X), model(X), rtol=1e-10)


@settings(max_examples=15, deadline=None)
@given(ratio=st.sampled_from([0.2, 0.4, 0.6]), seed=st.integers(0, 50))
def test_kept_indices_select_the_surviving_rows(ratio, seed):
    model = sciprune.MLP(3, [6, 5, 4], 2, "relu", seed=seed).double()
    before = [h.weight for h in hidden_layers(model)]
    sciprune.prune(model, "neuron-magnitude", ratio, scope="layer")
    small, kept = compact_kept(model)
    params = dict(model.named_parameters())
    for name, k, h in zip(before, kept, hidden_layers(small)):
        assert torch.equal(dict(small.named_parameters())[h.weight], params[name][k][:, _cols(kept, before, name)])


def _cols(kept, names, name):
    i = names.index(name)
    return kept[i - 1] if i > 0 else slice(None)


def test_fit_with_an_optimizer_checks_it():
    X, Y = _data()
    model = sciprune.MLP(3, [4], 2, "tanh", seed=0).double()
    other = sciprune.MLP(3, [4], 2, "tanh", seed=0).double()
    opt = torch.optim.Adam(other.parameters())
    assert_raises_user_error(lambda: sciprune.fit(model, (X, Y), sciprune.TrainConfig(epochs=1), optimizer=opt),
                             "exactly the model's trainable parameters")
    opt = torch.optim.Adam(model.parameters())
    assert_raises_user_error(lambda: sciprune.fit(model, (X, Y), sciprune.TrainConfig(epochs=1, lr_schedule="cosine"),
                                                  optimizer=opt), "constant")
    assert_raises_user_error(lambda: sciprune.fit(model, (X, Y), sciprune.TrainConfig(epochs=1), optimizer="adam"),
                             "torch.optim.Optimizer")


def test_lbfgs_cannot_follow():
    model = sciprune.MLP(3, [4], 2, "tanh", seed=0).double()
    sciprune.prune(model, "neuron-magnitude", 0.5)
    assert_raises_user_error(lambda: compact_in_training(model, torch.optim.LBFGS(model.parameters())), "L-BFGS")
