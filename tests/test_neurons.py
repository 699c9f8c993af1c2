"""Neuron granularity: neuron-magnitude scores, neuron selection (rows, biases, next columns), reports,
compaction to identical outputs, saving the compacted surrogate, and one-line refusals.

References are brute force: the row norms by an explicit sum, the removed set by sorting
(score, position) pairs in Python, the compacted network against the masked one in float64.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sciprune
from malformed import assert_raises_user_error
from sciprune import criteria
from sciprune.masks import get_masks, mask_pairs, prunable_names
from sciprune.neurons import hidden_layers, neuron_sparsity
from sciprune.pruning import PrunePlan, apply_plan, plan, score_result

F64 = torch.float64


def _mlp(widths=(6, 5), n_in=3, n_out=2, act="tanh", seed=0):
    return sciprune.MLP(n_in, list(widths), n_out, act, seed=seed).to(F64)


def _x(n_in, n=40, seed=3):
    return torch.randn(n, n_in, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _removed_by_brute_force(scores: dict[str, list[float]], k: int, dead: set) -> set:
    """(name, i) of the k lowest (score, position) pairs, dead neurons first (at least all of them)."""
    pool = [(name, i) for name, s in scores.items() for i in range(len(s))]
    order = sorted(range(len(pool)), key=lambda j: (pool[j] not in dead, scores[pool[j][0]][pool[j][1]], j))
    return {pool[j] for j in order[: max(k, len(dead))]}


def _state(model):
    return {**{k: v.clone() for k, v in model.state_dict().items()},
            **{f"{n}/mask": m.clone() for n, m in get_masks(model).items()},
            **{f"{i}/pair": m.clone() for i, (_, m) in enumerate(mask_pairs(model))}}


# ----------------------------------------------------------------------------- the criterion

def test_neuron_magnitude_is_the_l2_norm_of_each_hidden_row():
    model = _mlp()
    sciprune.prune(model, "random", 0.4, seed=1)  # masked weights count as zero
    crit = criteria.get("neuron-magnitude")
    assert crit.granularity == "neuron" and crit.needs_data is False
    assert criteria.get("magnitude").granularity == "weight"
    s = sciprune.scores(model, "neuron-magnitude")
    assert list(s) == ["linear0.weight", "linear1.weight"]  # hidden layers only, never the output layer
    for name, t in s.items():
        W = dict(model.named_parameters())[name].detach()
        ref = [math.sqrt(sum(float(W[i, j]) ** 2 for j in range(W.shape[1]))) for i in range(W.shape[0])]
        assert t.shape == (W.shape[0],) and not t.requires_grad
        assert torch.allclose(t, torch.tensor(ref, dtype=F64), rtol=1e-14, atol=0)
    assert list(sciprune.scores(model, "neuron-magnitude", names=["linear1.weight"])) == ["linear1.weight"]


# ----------------------------------------------------------------------------- selection

@settings(max_examples=40, deadline=None)
@given(widths=st.lists(st.integers(2, 7), min_size=1, max_size=3), ratio=st.floats(0.0, 0.99),
       scope=st.sampled_from(["global", "layer"]), seed=st.integers(0, 10**6), ties=st.booleans())
def test_removed_neurons_have_zero_rows_biases_and_next_columns(widths, ratio, scope, seed, ties):
    model = _mlp(widths, seed=seed % 97)
    g = torch.Generator().manual_seed(seed)
    layers = hidden_layers(model)
    scores = {h.weight: (torch.randint(0, 3, (h.size,), generator=g) if ties else torch.rand(h.size, generator=g))
              .to(F64) for h in layers}
    sizes = {h.weight: h.size for h in layers}
    k_of = (lambda n: math.floor(ratio * n + 0.5))
    empties = (any(k_of(n) >= n for n in sizes.values()) if scope == "layer" else None)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    p = PrunePlan("neuron-magnitude", scores)
    assert p.granularity == "neuron"
    lists = {n: s.tolist() for n, s in scores.items()}
    if scope == "global":
        expect = _removed_by_brute_force(lists, k_of(sum(sizes.values())), set())
    else:
        expect = set().union(*(_removed_by_brute_force({n: lists[n]}, k_of(sizes[n]), set()) for n in lists))
    if scope == "global":
        empties = any(all((n, i) in expect for i in range(sizes[n])) for n in sizes)
    if empties:
        assert_raises_user_error(lambda: apply_plan(model, p, ratio, scope=scope), "neuron ratio", "hidden layer")
        assert all(torch.equal(q.detach(), before[n]) for n, q in model.named_parameters())
        assert not mask_pairs(model)
        return
    rep = apply_plan(model, p, ratio, scope=scope)
    params = dict(model.named_parameters())
    got = set()
    for h in layers:
        for i in range(h.size):
            gone = (h.weight, i) in expect
            row, bias, col = params[h.weight][i], params[h.bias][i], params[h.next_weight][:, i]
            if gone:
                got.add((h.weight, i))
                assert not row.any() and bias == 0 and not col.any(), (h.weight, i)
            else:
                assert torch.equal(row.detach(), before[h.weight][i] * (row != 0)), "a kept row changed"
                assert bias == before[h.bias][i]
    assert got == expect
    assert rep.granularity == "neuron" and rep.pruned == rep.neurons_pruned == len(expect)
    assert rep.total == rep.neurons_total == sum(sizes.values())
    masks = get_masks(model)
    assert rep.weights_pruned == sum(int((~m).sum()) for m in masks.values())
    assert rep.weights_total == sum(m.numel() for m in masks.values())
    assert rep.weight_sparsity == rep.weights_pruned / rep.weights_total
    assert rep.neuron_sparsity == rep.achieved == len(expect) / sum(sizes.values())
    assert neuron_sparsity(model)["neurons"]["removed"] == len(expect)


def test_already_removed_neurons_rank_first_and_masks_only_shrink():
    model = _mlp((6, 5))
    layers = hidden_layers(model)
    first = {h.weight: torch.arange(h.size, dtype=F64) for h in layers}           # removes the first ones
    apply_plan(model, PrunePlan("neuron-magnitude", first), 0.3)
    masks1 = _state(model)
    dead = {(h.weight, i) for h in layers for i in range(h.size) if not bool(get_masks(model)[h.weight][i].any())}
    # floor(0.3 * 11 + 0.5) = 3: scores 0 (linear0, then linear1 by position) and 1 (linear0)
    assert dead == {("linear0.weight", 0), ("linear1.weight", 0), ("linear0.weight", 1)}
    second = {h.weight: -torch.arange(h.size, dtype=F64) for h in layers}         # prefers the last ones
    rep = apply_plan(model, PrunePlan("neuron-magnitude", second), 0.5)
    masks2 = _state(model)
    dead1 = {n for n in masks1 if n.endswith("/pair")}
    for n in dead1:
        assert not (masks2[n] & ~masks1[n]).any(), f"{n} revived"
    lists = {n: s.tolist() for n, s in second.items()}
    assert _removed_by_brute_force(lists, 6, dead) == {
        (h.weight, i) for h in layers for i in range(h.size) if not bool(get_masks(model)[h.weight][i].any())}
    assert rep.pruned == 6
    # a ratio below what is already removed keeps them removed
    assert apply_plan(model, PrunePlan("neuron-magnitude", first), 0.1).pruned == 6


def test_weight_criterion_reports_keep_their_meaning():
    model = _mlp()
    rep = sciprune.prune(model, "magnitude", 0.5)
    assert rep.granularity == "weight" and rep.neurons_pruned is None and rep.neuron_sparsity is None
    assert rep.pruned == rep.weights_pruned == math.floor(0.5 * rep.total + 0.5) and rep.total == rep.weights_total


def test_prune_ensemble_with_a_neuron_criterion_equals_prune_per_member():
    from sciprune.ensemble import prune_ensemble

    members = [_mlp(seed=s) for s in range(3)]
    alone = [copy.deepcopy(m) for m in members]
    reps = prune_ensemble(members, "neuron-magnitude", [0.2, 0.4, 0.6], scope="layer")
    for m, a, r, ratio in zip(members, alone, reps, [0.2, 0.4, 0.6]):
        ref = sciprune.prune(a, "neuron-magnitude", ratio, scope="layer")
        assert r.neurons_pruned == ref.neurons_pruned and r.granularity == "neuron"
        sa, sb = _state(m), _state(a)
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


# ----------------------------------------------------------------------------- compaction and saving

@pytest.mark.parametrize("act", ["tanh", "relu", "gelu", "sin"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_compact_gives_identical_outputs_and_smaller_layers(act, scope):
    model = _mlp((7, 6, 5), act=act, seed=2)
    with torch.no_grad():  # biases away from zero: a bias left on a removed neuron would show
        for h in hidden_layers(model):
            dict(model.named_parameters())[h.bias].add_(0.5)
    rep = sciprune.prune(model, "neuron-magnitude", 0.4, scope=scope)
    small = sciprune.compact(model)
    X = _x(3)
    with torch.no_grad():
        err = float((small(X) - model(X)).abs().max())
    assert err <= 1e-12
    kept = [int(get_masks(model)[h.weight].any(dim=1).sum()) for h in hidden_layers(model)]
    assert [h.size for h in hidden_layers(small)] == kept and sum(kept) == rep.neurons_total - rep.neurons_pruned
    assert not mask_pairs(small) or all(bool(m.all()) for _, m in mask_pairs(small))


def test_compacted_surrogate_saves_loads_and_matches(tmp_path):
    model = _mlp((8, 6), seed=4)
    sciprune.prune(model, "neuron-magnitude", 0.5)
    sciprune.prune(model, "magnitude", 0.5)  # weight masks on the survivors carry over too
    small = sciprune.compact(model)
    sciprune.save(small, tmp_path / "s")
    loaded = sciprune.load(tmp_path / "s")
    X = _x(3)
    with torch.no_grad():
        assert float((loaded.model(X) - model(X)).abs().max()) <= 1e-12
    assert {n: torch.equal(m, get_masks(small)[n]) for n, m in get_masks(loaded.model).items()} == \
        {n: True for n in prunable_names(small)}


# ----------------------------------------------------------------------------- bad input

class _Gate(nn.Module):
    def __init__(self):
        super().__init__()
        self.g = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return x * self.g


@pytest.mark.parametrize("make, call, needles", [
    (lambda: _mlp((2, 6)), lambda m: sciprune.prune(m, "neuron-magnitude", 0.75, scope="layer"),
     ["neuron ratio 0.75", "'linear0.weight'", "below 0.75"]),
    (lambda: _mlp((2, 6)), lambda m: sciprune.prune(m, "neuron-magnitude", 0.9),
     ["neuron ratio 0.9", "global", "fewer than one in each"]),
    (lambda: _mlp((2, 30)), lambda m: apply_plan(
        m, PrunePlan("neuron-magnitude", {"linear0.weight": torch.zeros(2, dtype=F64),
                                          "linear1.weight": torch.ones(30, dtype=F64)}), 0.1),
     ["would remove all 2 neurons", "'linear0.weight'", "at least one neuron"]),
    (lambda: _mlp(), lambda m: sciprune.prune(m, "neuron-magnitude", 0.3, names=["linear2.weight"]),
     ["linear2.weight", "never the output layer"]),
    (lambda: _mlp(), lambda m: sciprune.prune(m, "neuron-magnitude", 0.3, _x(3), compensate=True),
     ["compensate=True", "neuron-magnitude", "whole neurons"]),
    (lambda: _mlp(), lambda m: apply_plan(m, PrunePlan("neuron-magnitude", {"linear0.weight": torch.ones(6)},
                                                      {"linear0.weight": torch.ones(6, 3)}), 0.3),
     ["neuron plan", "bias shifts"]),
    (lambda: _mlp(), lambda m: apply_plan(m, PrunePlan("neuron-magnitude", {"linear0.weight": torch.ones(4)}), 0.3),
     ["does not fit", "linear0.weight"]),
    (lambda: _mlp(), lambda m: PrunePlan("magnitude", {}, granularity="channel"), ["granularity", "channel"]),
    (lambda: nn.Sequential(nn.Linear(3, 4), _Gate(), nn.Linear(4, 1)).double(),
     lambda m: sciprune.prune(m, "neuron-magnitude", 0.25), ["neuron granularity", "'1'", "_Gate"]),
    (lambda: nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 1)).double(),
     lambda m: sciprune.scores(m, "neuron-magnitude"), ["neuron granularity", "Softmax"]),
    (lambda: nn.Sequential(nn.Linear(3, 2)).double(), lambda m: sciprune.prune(m, "neuron-magnitude", 0.2),
     ["single Linear layer"]),
    (lambda: nn.ModuleList([nn.Linear(3, 2)]), lambda m: sciprune.scores(m, "neuron-magnitude"),
     ["nn.Sequential", "ModuleList"]),
])
def test_bad_input_is_one_line_and_changes_nothing(make, call, needles):
    model = make()
    before = _state(model)
    assert_raises_user_error(lambda: call(model), *needles)
    after = _state(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_register_refuses_an_unknown_granularity():
    assert_raises_user_error(lambda: criteria.register("x-bogus", summary="", needs_data=False,
                                                       granularity="channel"), "granularity", "channel")
    assert "x-bogus" not in sciprune.methods()


def test_neuron_plan_shapes_and_score_result():
    model = _mlp()
    res = score_result(model, "neuron-magnitude")
    assert res.bias_shifts is None and {n: tuple(t.shape) for n, t in res.scores.items()} == \
        {"linear0.weight": (6,), "linear1.weight": (5,)}
    p = plan(model, "neuron-magnitude", compensate=False)
    assert p.granularity == "neuron" and p.shifts is None


# ----------------------------------------------------------------------------- a case file

@pytest.mark.slow
@pytest.mark.parametrize("method,options", [("neuron-magnitude", {}), ("taylor-neuron", {"batch_size": 16, "batches": 4})])
def test_a_case_with_a_neuron_method_runs_through_plan_and_apply_plan(tmp_path, monkeypatch, method, options):
    """``prune.methods = [<a neuron method>]`` in a case file (with its options, checked at load on a network
    with a hidden layer): the ratio is a neuron ratio and the recorded sparsity is the neuron sparsity (the
    2-4-1 tiny case: 2 of 4 hidden neurons at 0.5)."""
    import sciprune.pipeline
    from helpers import tiny_case
    from malformed import invoke
    from sciprune.data.diffsorp import generate
    from sciprune.results import read_dataset

    monkeypatch.setattr(sciprune.pipeline, "_figures", lambda *args: None)
    data = generate(tmp_path / "ds.h5", n_samples=1, nx=24, nt=11, mode="accurate", workers=1)
    case = tmp_path / "case.toml"
    prune = {"methods": [method], "ratios": [0.5], **({"options": {method: options}} if options else {})}
    case.write_text(tiny_case(tmp_path / "out", data, prune=prune))
    r = invoke(["run", case, "--quiet"])
    assert r.exit_code == 0, r.output
    ds = read_dataset(tmp_path / "out" / "results.nc")
    assert float(ds["sparsity"].sel({"method": method}).max()) == 0.5


@pytest.mark.parametrize("prune,key,needle", [
    ({"methods": ["neuron-magnitude"], "ratios": [0.9]}, "prune.ratios", "would remove all 4 neurons"),
    ({"methods": ["neuron-magnitude"], "ratios": [0.5], "compensate": ["neuron-magnitude"]}, "prune.compensate",
     "defined per weight"),
])
def test_a_neuron_ratio_that_empties_a_layer_is_refused_at_load(tmp_path, prune, key, needle):
    """In a case file the check needs only the widths: one line naming the key, before any data are made
    (the data file does not even exist here; [data.generate] would make it)."""
    from helpers import tiny_case
    from malformed import assert_user_error, invoke, snapshot

    case = tmp_path / "case.toml"
    case.write_text(tiny_case(tmp_path / "out", tmp_path / "absent.h5", data={"generate": {"nx": 24, "nt": 11}},
                              prune=dict(prune, scope="layer")))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, case, "--quiet"]), key, needle, watch=(tmp_path,), before=before)
