"""taylor-neuron (Molchanov et al. 2019): the score against autograd on a reference network with real gates.

The reference copies the network and multiplies every hidden layer's activation by a parameter vector of
ones (the gate); the score of "squared" is the mean over mini-batches of (dL_b/dgate)^2 for the batch-mean
loss by ``torch.autograd.grad``, and that of "per-example" the mean over mini-batches of the sum over the
batch's samples of (dl_n/dgate)^2, one autograd call per sample. float64 throughout. Then the method in
use: one-shot neuron pruning at the exact ratio, schedules (nested masks), GradualPruning during
training, the CLI listing, one-line refusals of bad options and a case file run through ``sciprune run``.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sciprune
from helpers import assert_close
from malformed import assert_raises_user_error, invoke
from sciprune import GradualPruning, TrainConfig, fit
from sciprune.masks import get_masks, mask_pairs
from sciprune.neurons import alive_neurons, hidden_layers
from sciprune.procedure import prune_scheduled
from sciprune.schedules import Cubic, MultiStep
from sciprune.selection import n_to_prune

F64 = torch.float64


class Gated(nn.Module):
    """A copy of an MLP whose hidden activations are multiplied by gates (parameters, all ones)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.children_ = nn.ModuleList(copy.deepcopy(list(model.children())))
        for p in self.children_.parameters():
            p.requires_grad_(False)
        self.gates = nn.ParameterList([nn.Parameter(torch.ones(h.size, dtype=F64)) for h in hidden_layers(model)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = -1
        for m in self.children_:
            if isinstance(m, nn.Linear):
                if k >= 0:  # the activations entering every Linear after the first are gated
                    x = x * self.gates[k]
                k += 1
            x = m(x)
        return x


def _loss(y: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """The batch-mean training loss: MSE over samples and outputs, or cross-entropy over samples."""
    return F.mse_loss(y, Y) if Y.is_floating_point() else F.cross_entropy(y, Y)


def _reference(model: nn.Module, per_batch: list[tuple[torch.Tensor, torch.Tensor]], variant: str) -> list[list]:
    """For every batch, the gate terms of every hidden layer by autograd on :class:`Gated`."""
    gated = Gated(model)
    out = []
    for X, Y in per_batch:
        if variant == "squared":
            grads = torch.autograd.grad(_loss(gated(X), Y), list(gated.gates))
            out.append([g.square() for g in grads])
        else:
            terms = [torch.zeros_like(g) for g in gated.gates]
            for n in range(X.shape[0]):  # l_n: the loss of sample n alone
                for acc, g in zip(terms, torch.autograd.grad(_loss(gated(X[n:n + 1]), Y[n:n + 1]), list(gated.gates))):
                    acc += g.square()
            out.append(terms)
    return out


def _mean(terms: list[list], which) -> list[torch.Tensor]:
    chosen = [terms[b] for b in which]
    return [sum(t[k] for t in chosen) / len(chosen) for k in range(len(terms[0]))]


def _problem(widths, act, loss, n, seed, n_in=3):
    g = torch.Generator().manual_seed(seed)
    n_out = 3 if loss == "cross_entropy" else 2
    model = sciprune.MLP(n_in, list(widths), n_out, act, seed=seed).to(F64)
    X = torch.randn(n, n_in, generator=g, dtype=F64)
    Y = torch.randint(0, n_out, (n,), generator=g) if loss == "cross_entropy" else torch.randn(n, n_out, generator=g, dtype=F64)
    return model, X, Y


def _split(X, Y, bs):
    return [(X[i:i + bs], Y[i:i + bs]) for i in range(0, X.shape[0], bs)]


# ----------------------------------------------------------------------------- the score against autograd

@settings(max_examples=30, deadline=None)
@given(widths=st.lists(st.integers(2, 6), min_size=1, max_size=3), act=st.sampled_from(["tanh", "relu"]),
       loss=st.sampled_from(["mse", "cross_entropy"]), n=st.integers(5, 24), bs=st.integers(1, 9),
       variant=st.sampled_from(["squared", "per-example"]), seed=st.integers(0, 10**4), masked=st.booleans())
def test_score_equals_the_squared_gate_gradient_by_autograd(widths, act, loss, n, bs, variant, seed, masked):
    model, X, Y = _problem(widths, act, loss, n, seed)
    if masked:  # removed neurons: zero rows, biases and next columns; the reference sees the same values
        sciprune.prune(model, "neuron-magnitude", 0.3, scope="layer")
    with torch.no_grad():
        assert_close(Gated(model)(X), model(X), rtol=1e-14, what="reference network")
    s = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=bs, variant=variant, batches=100)
    ref = _mean(_reference(model, _split(X, Y, bs), variant), range(math.ceil(n / bs)))
    names = [h.weight for h in hidden_layers(model)]
    assert list(s) == names
    for name, r in zip(names, ref):
        assert s[name].dtype == F64 and not s[name].requires_grad
        assert_close(s[name], r, rtol=1e-10, what=f"{variant} {name}")
    if masked:
        for name, alive in alive_neurons(model, names).items():
            assert bool((s[name][~alive] == 0).all()), "a removed neuron scored"


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_several_batches_are_averaged_and_not_one_full_batch(act, loss):
    """Three batches of 8: the mean of three squared gradients, which is not the full-batch square."""
    model, X, Y = _problem((5, 4), act, loss, 24, seed=7)
    ref = _reference(model, _split(X, Y, 8), "squared")
    s = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=8)
    for k, name in enumerate(["linear0.weight", "linear1.weight"]):
        assert_close(s[name], _mean(ref, range(3))[k], rtol=1e-10, what=name)
    full = sciprune.scores(model, "taylor-neuron", (X, Y))  # one batch of all rows
    assert_close(full["linear0.weight"], _reference(model, [(X, Y)], "squared")[0][0], rtol=1e-10, what="full")
    assert not torch.allclose(full["linear0.weight"], s["linear0.weight"])


def test_batches_option_averages_a_subset_drawn_with_the_seed():
    """Six mini-batches, batches=3: the score is the mean over some three of them (found by brute force
    over all 20 subsets), the same three for a seed; the seeds do not all draw the same subset."""
    model, X, Y = _problem((5, 4), "tanh", "mse", 30, seed=3)
    ref = _reference(model, _split(X, Y, 5), "squared")
    found = set()
    for seed in range(6):
        s = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=5, batches=3, seed=seed)
        match = [c for c in itertools.combinations(range(6), 3)
                 if all(torch.allclose(s[n], r, rtol=1e-12, atol=0)
                        for n, r in zip(["linear0.weight", "linear1.weight"], _mean(ref, c)))]
        assert len(match) == 1, f"seed {seed}: matches {match}"
        found.add(match[0])
        again = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=5, batches=3, seed=seed)
        assert all(torch.equal(s[n], again[n]) for n in s)
    assert len(found) > 1
    every = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=5, batches=6, seed=4)
    assert_close(every["linear1.weight"], _mean(ref, range(6))[1], rtol=1e-12, what="all six")


def test_normalize_divides_each_layer_by_its_l2_norm():
    model, X, Y = _problem((6, 5, 4), "relu", "cross_entropy", 20, seed=2)
    for variant in ("squared", "per-example"):
        raw = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=4, variant=variant)
        unit = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=4, variant=variant, normalize=True)
        for name, r in raw.items():
            norm = math.sqrt(sum(float(v) ** 2 for v in r))
            assert norm > 0
            assert_close(unit[name], r / norm, rtol=1e-14, what=name)
            assert abs(float(torch.linalg.vector_norm(unit[name])) - 1.0) < 1e-14


def test_a_layer_whose_scores_are_all_zero_stays_zero_when_normalized():
    model, X, Y = _problem((4, 3), "relu", "mse", 12, seed=1)
    with torch.no_grad():  # the second hidden layer never fires: a = 0, so every gate term is 0
        model.linear1.bias.fill_(-100.0)
    s = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=4, normalize=True)
    assert bool((s["linear1.weight"] == 0).all()) and bool(torch.isfinite(s["linear0.weight"]).all())


# ----------------------------------------------------------------------------- the method in use

def test_prune_removes_whole_neurons_at_the_exact_ratio():
    model, X, Y = _problem((6, 5), "tanh", "mse", 32, seed=5)
    s = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=8)
    pool = sorted(((float(v), name, i) for name, t in s.items() for i, v in enumerate(t)))
    expect = {(name, i) for _, name, i in pool[: n_to_prune(0.5, 11)]}  # global ranking, lowest first
    rep = sciprune.prune(model, "taylor-neuron", 0.5, (X, Y), batch_size=8)
    assert rep.granularity == "neuron" and rep.pruned == rep.neurons_pruned == 6 and rep.neurons_total == 11
    params = dict(model.named_parameters())
    alive = alive_neurons(model, list(s))
    assert {(n, i) for n, a in alive.items() for i in range(a.numel()) if not a[i]} == expect
    masks = get_masks(model)
    feeds = torch.ones(3, dtype=torch.bool)  # the inputs of the first hidden layer are never removed
    for h in hidden_layers(model):
        gone = ~alive[h.weight]
        assert not params[h.weight][gone].any() and not params[h.bias][gone].any()
        assert not params[h.next_weight][:, gone].any()
        assert torch.equal(masks[h.weight][~gone], feeds.expand(int((~gone).sum()), -1))  # nothing else removed
        feeds = ~gone


def test_multi_step_schedule_gives_nested_masks_and_the_exact_count():
    model, X, Y = _problem((8, 7), "tanh", "mse", 24, seed=4)
    masks = []
    reps = prune_scheduled(model, "taylor-neuron", 0.6, (X, Y), schedule=MultiStep(steps=3), batch_size=6,
                           on_step=lambda m, k, rep: masks.append({n: t.clone() for n, t in get_masks(m).items()}))
    assert len(reps) == 3 and reps[-1].ratio == 0.6 and reps[-1].pruned == n_to_prune(0.6, 15)
    assert [r.pruned for r in reps] == [n_to_prune(r.ratio, 15) for r in reps]
    for a, b in zip(masks, masks[1:]):
        assert all(not (b[n] & ~a[n]).any() for n in a), "a mask grew"


class _Alive:
    """A hook recording the alive neurons after every optimiser step."""

    def __init__(self):
        self.seen = []

    def after_step(self, state):
        self.seen.append(alive_neurons(state.members[0], ["linear0.weight", "linear1.weight"]))


def test_gradual_pruning_during_training_reaches_the_target_and_removed_neurons_stay_removed():
    model, X, Y = _problem((8, 6), "tanh", "mse", 24, seed=6)
    hook = GradualPruning("taylor-neuron", 0.5, (X, Y), schedule=Cubic(initial=0.1, start_step=2, n_updates=3, every=2),
                          batch_size=6)
    rec = _Alive()
    fit(model, (X, Y), TrainConfig(epochs=5, lr=1e-2, batch_size=12), hooks=[hook, rec])
    assert hook.reports[-1].ratio == 0.5 and hook.reports[-1].pruned == n_to_prune(0.5, 14)
    for a, b in zip(rec.seen, rec.seen[1:]):
        assert all(not (b[n] & ~a[n]).any() for n in a), "a removed neuron came back"
    params = dict(model.named_parameters())
    final = rec.seen[-1]
    for h in hidden_layers(model):
        gone = ~final[h.weight]
        assert gone.any() and not params[h.weight][gone].any() and not params[h.bias][gone].any()
        assert not params[h.next_weight][:, gone].any()


def test_methods_lists_it_as_removing_whole_neurons():
    r = invoke(["methods"])
    assert r.exit_code == 0, r.output
    line = next(ln for ln in r.output.splitlines() if ln.startswith("taylor-neuron "))
    assert "[removes whole neurons]" in line and "no data needed" not in line


@pytest.mark.parametrize("options,needles", [
    ({"batches": 0}, ["batches", "positive integer", "0"]),
    ({"batches": 2.5}, ["batches", "positive integer"]),
    ({"batches": True}, ["batches", "positive integer"]),
    ({"variant": "bogus"}, ["variant", "squared", "per-example", "bogus"]),
    ({"normalize": 1}, ["normalize", "True or False", "1"]),
    ({"normalize": "yes"}, ["normalize", "True or False", "yes"]),
])
def test_bad_options_are_one_line_and_change_nothing(options, needles):
    model, X, Y = _problem((4, 3), "tanh", "mse", 8, seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert_raises_user_error(lambda: sciprune.prune(model, "taylor-neuron", 0.3, (X, Y), **options), *needles)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and not mask_pairs(model)


def test_shuffle_cuts_the_batches_from_rows_in_an_order_drawn_with_the_seed():
    model = sciprune.MLP(2, [5, 4], 1, "tanh", seed=0).double()
    g = torch.Generator().manual_seed(1)
    X, Y = torch.rand(40, 2, generator=g, dtype=F64), torch.rand(40, 1, generator=g, dtype=F64)
    got = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=10, shuffle=True, seed=3)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(3))
    ref = sciprune.scores(model, "taylor-neuron", (X[order], Y[order]), batch_size=10, seed=3)
    for n in got:
        assert torch.equal(got[n], ref[n])
    plain = sciprune.scores(model, "taylor-neuron", (X, Y), batch_size=10, seed=3)
    assert any(not torch.equal(got[n], plain[n]) for n in got)
    assert_raises_user_error(lambda: sciprune.scores(model, "taylor-neuron", (X, Y), shuffle="yes"), "shuffle")
