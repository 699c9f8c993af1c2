"""Compaction: dead hidden neurons are removed, constants folded into the next bias, outputs kept.

The reference for which neurons survive is a brute-force fixed point over the weight connectivity
(a hidden neuron lives while it has a non-zero incoming weight from a living neuron or input and a
non-zero outgoing weight to a living neuron or output), computed independently of ``compact``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sciprune
from sciprune.compaction import compact, dead_neurons
from sciprune.masks import get_masks, prunable_names, set_masks
from sciprune.models import linear_chain



ACTS = ["tanh", "relu", "gelu", "sin"]
ATOL = 1e-12


def _mlp(sizes, act, seed=0):
    model = sciprune.MLP(sizes[0], sizes[1:-1], sizes[-1], act, seed=seed).double()
    with torch.no_grad():  # biases well away from zero so that folded constants are not trivial
        g = torch.Generator().manual_seed(seed + 1)
        for lin in linear_chain(model):
            lin.bias.copy_(0.3 + torch.rand(lin.bias.shape, generator=g, dtype=torch.float64))
    return model


def _x(n_in, n=50, seed=3):
    return torch.randn(n, n_in, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _assert_outputs_equal(a, b, n_in):
    X = _x(n_in)
    with torch.no_grad():
        ya, yb = a(X), b(X)
    err = (ya - yb).abs().max().item()
    assert err <= ATOL, f"outputs differ by {err:.3e} (worst at sample {int((ya - yb).abs().amax(1).argmax())})"


def _reference_alive(model):
    """Per hidden layer, the indices of neurons that survive (brute-force greatest fixed point)."""
    Ws = [lin.weight.detach() != 0 for lin in linear_chain(model)]
    alive = [torch.ones(W.shape[0], dtype=torch.bool) for W in Ws[:-1]]
    changed = True
    while changed:
        changed = False
        for l in range(len(alive)):
            prev = alive[l - 1] if l > 0 else torch.ones(Ws[0].shape[1], dtype=torch.bool)
            nxt = alive[l + 1] if l + 1 < len(alive) else torch.ones(Ws[-1].shape[0], dtype=torch.bool)
            has_in = Ws[l][:, prev].any(dim=1)
            has_out = Ws[l + 1][nxt, :].any(dim=0)
            new = alive[l] & has_in & has_out
            if not torch.equal(new, alive[l]):
                alive[l], changed = new, True
    return [torch.nonzero(a).flatten() for a in alive]


def _expected_widths(alive):
    if any(len(a) == 0 for a in alive):
        return [1] * len(alive)
    return [len(a) for a in alive]


def _check_compaction(model):
    """Compact and check outputs, widths, surviving weights and masks against the reference."""
    sizes = model.sizes
    alive = _reference_alive(model)
    masks = get_masks(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    small = compact(model)
    _assert_outputs_equal(model, small, sizes[0])
    # the original is untouched
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
    for n, m in get_masks(model).items():
        assert torch.equal(m, masks[n])
    new_sizes = small.sizes
    assert new_sizes[0] == sizes[0] and new_sizes[-1] == sizes[-1]  # inputs and outputs never removed
    assert new_sizes[1:-1] == _expected_widths(alive)
    collapsed = any(len(a) == 0 for a in alive)
    if not collapsed:
        assert not any(bool(d.any()) for d in dead_neurons(small)), "dead neurons left after compaction"
        # surviving weights and masks are the original ones, sliced
        idx = [torch.arange(sizes[0]), *alive, torch.arange(sizes[-1])]
        new_masks = get_masks(small)
        for l, (name, lin) in enumerate(zip(prunable_names(small), linear_chain(small))):
            rows, cols = idx[l + 1], idx[l]
            assert torch.equal(lin.weight.detach(), before[name][rows][:, cols]), name
            assert torch.equal(new_masks[name], masks[name][rows][:, cols]), name
    return small


@pytest.mark.parametrize("act", ACTS)
def test_zero_outgoing_column_drops_neuron(act):
    model = _mlp([3, 6, 5, 2], act)
    m = torch.ones(5, 6, dtype=torch.bool)
    m[:, 2] = False  # neuron 2 of hidden layer 0 feeds nothing
    set_masks(model, {"linear1.weight": m})
    small = _check_compaction(model)
    assert small.sizes == [3, 5, 5, 2]
    # dropping a neuron without effect leaves the next bias alone
    assert torch.equal(small.linear1.bias, model.linear1.bias)


@pytest.mark.parametrize("act", ACTS)
def test_zero_incoming_row_folds_constant_into_next_bias(act):
    model = _mlp([3, 6, 5, 2], act)
    m = torch.ones(6, 3, dtype=torch.bool)
    m[4, :] = False  # neuron 4 of hidden layer 0 outputs act(b0[4]) for every input
    set_masks(model, {"linear0.weight": m})
    small = _check_compaction(model)
    assert small.sizes == [3, 5, 5, 2]
    with torch.no_grad():
        shift = model.linear1.weight[:, 4] * model.act0(model.linear0.bias[4:5])
    torch.testing.assert_close(small.linear1.bias, model.linear1.bias + shift, rtol=0, atol=1e-15)
    assert not torch.equal(small.linear1.bias, model.linear1.bias)


@pytest.mark.parametrize("act", ACTS)
def test_direct_zeroing_without_masks(act):
    """Compaction reads the live weights: zeros written by hand count as well as masked ones."""
    model = _mlp([2, 5, 4, 3], act, seed=4)
    with torch.no_grad():
        model.linear0.weight[1].zero_()  # constant neuron
        model.linear1.weight[:, 3].zero_()  # no outgoing weights
        model.linear2.weight[:, 0].zero_()  # layer 1 neuron 0 feeds nothing
    small = _check_compaction(model)
    assert small.sizes == [2, 3, 3, 3]
    assert all(bool(m.all()) for m in get_masks(small).values())  # no mask was set, none appears


@pytest.mark.parametrize("act", ACTS)
def test_cascade_layer_dying_makes_previous_dead(act):
    model = _mlp([3, 5, 4, 4, 2], act, seed=7)
    with torch.no_grad():
        model.linear3.weight[:, 1].zero_()  # layer-2 neuron 1 has no outgoing weight -> dropped
        model.linear2.weight[:, 2].zero_()
        model.linear2.weight[1, 2] = 0.7  # layer-1 neuron 2 feeds only layer-2 neuron 1 -> dead next
        model.linear1.weight[:, 0].zero_()
        model.linear1.weight[2, 0] = -0.4  # layer-0 neuron 0 feeds only layer-1 neuron 2 -> dead last
    small = _check_compaction(model)
    assert small.sizes == [3, 4, 3, 3, 2]


@pytest.mark.parametrize("act", ACTS)
def test_cascade_forward_through_constants(act):
    """Removing columns can leave the next layer's rows all zero: those become constants too."""
    model = _mlp([3, 4, 3, 2], act, seed=8)
    with torch.no_grad():
        model.linear0.weight[0].zero_()
        model.linear0.weight[1].zero_()  # neurons 0, 1 of layer 0 are constants
        model.linear1.weight[2, 2:].zero_()  # layer-1 neuron 2 only listens to those two constants
    small = _check_compaction(model)
    assert small.sizes == [3, 2, 2, 2]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("how", ["incoming", "outgoing", "middle"])
def test_whole_hidden_layer_dead_keeps_one_neuron(act, how):
    model = _mlp([3, 5, 4, 2], act, seed=11)
    with torch.no_grad():
        if how == "incoming":
            model.linear0.weight.zero_()  # layer 0 constant -> folded; then all downstream constant
        elif how == "outgoing":
            model.linear2.weight.zero_()  # nothing reaches the output
        else:
            model.linear1.weight.zero_()
    small = _check_compaction(model)
    assert small.sizes == [3, 1, 1, 2]
    X = _x(3)
    with torch.no_grad():
        y = small(X)
    assert torch.equal(y, y[:1].expand_as(y))  # the network is now a constant
    for lin in linear_chain(small)[:-1]:
        assert bool((lin.weight == 0).all())


@pytest.mark.parametrize("act", ACTS)
def test_dead_one_neuron_layer_at_the_end_cascades_back(act):
    """A last hidden layer of one neuron dies: every layer before it is dead too (found by hypothesis)."""
    model = _mlp([2, 3, 1, 1, 1], act, seed=3)
    with torch.no_grad():
        model.linear3.weight.zero_()
    small = _check_compaction(model)
    assert small.sizes == [2, 1, 1, 1, 1]


def test_inputs_and_outputs_are_never_removed():
    model = _mlp([4, 5, 3], "tanh")
    with torch.no_grad():
        model.linear0.weight[:, 1].zero_()  # input 1 unused
        model.linear1.weight[2].zero_()  # output 2 is its bias only
    small = _check_compaction(model)
    assert small.sizes == [4, 5, 3]


def test_missing_next_bias_is_created_for_folded_constants():
    lin0, lin1 = nn.Linear(3, 4).double(), nn.Linear(4, 2, bias=False).double()
    model = nn.Sequential(lin0, nn.Sigmoid(), lin1)  # sigmoid(b) != 0: the fold needs a bias
    with torch.no_grad():
        lin0.weight[1].zero_()
    small = compact(model)
    assert linear_chain(small)[0].out_features == 3
    assert linear_chain(small)[1].bias is not None
    _assert_outputs_equal(model, small, 3)


def test_masks_carry_over_and_hold_in_training():
    model = _mlp([3, 8, 6, 2], "tanh", seed=2)
    sciprune.prune(model, "magnitude", 0.6, scope="layer")
    with torch.no_grad():
        model.linear1.weight[:, 5].zero_()
    set_masks(model, {"linear1.weight": model.linear1.weight != 0})
    small = _check_compaction(model)
    masks = get_masks(small)
    assert any(not bool(m.all()) for m in masks.values())
    X = _x(3, 64)
    Y = torch.sin(X[:, :2])
    sciprune.fit(small, (X, Y), sciprune.TrainConfig(epochs=30, lr=1e-2))
    for n, p in small.named_parameters():
        if n in masks:
            assert bool((p.detach()[~masks[n]] == 0).all())


def test_compact_of_compact_is_identity():
    model = _mlp([3, 7, 6, 2], "gelu", seed=5)
    sciprune.prune(model, "random", 0.85, seed=1)
    once = compact(model)
    twice = compact(once)
    assert twice.sizes == once.sizes
    for (n1, p1), (n2, p2) in zip(once.named_parameters(), twice.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)


@settings(max_examples=60, deadline=None)
@given(
    widths=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    n_in=st.integers(1, 4),
    n_out=st.integers(1, 3),
    act=st.sampled_from(ACTS),
    density=st.floats(0.05, 1.0),
    seed=st.integers(0, 10_000),
    kill=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6), st.booleans()), max_size=4),
)
def test_property_random_masks(widths, n_in, n_out, act, density, seed, kill):
    model = _mlp([n_in, *widths, n_out], act, seed=seed)
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(p.shape, generator=g) < density for n, p in model.named_parameters() if n.endswith("weight")}
    # force dead neurons through both routes: zero a row of W_l (constant) or a column of W_{l+1}
    for layer, unit, incoming in kill:
        if layer < len(widths) and unit < widths[layer]:
            if incoming:
                masks[f"linear{layer}.weight"][unit, :] = False
            else:
                masks[f"linear{layer + 1}.weight"][:, unit] = False
    set_masks(model, masks)
    _check_compaction(model)
