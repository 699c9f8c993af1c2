"""Selection: scores -> keep-masks with the documented rounding rule, tie-break and shrinking masks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sciprune.errors import SciPruneError
from sciprune.selection import check_ratio, n_to_prune, select




def _brute_force(scores, ratio, masks=None):
    """Reference: rank (dead first, then score, then position) by a Python sort; prune the first k."""
    names = list(scores)
    entries = []  # (alive, score, position, name, flat index)
    pos = 0
    for n in names:
        flat = scores[n].flatten().tolist()
        alive = masks[n].flatten().tolist() if masks and n in masks else [True] * len(flat)
        for i, (s, a) in enumerate(zip(flat, alive)):
            entries.append((a, s, pos, n, i))
            pos += 1
    k = math.floor(ratio * len(entries) + 0.5)
    k = max(k, sum(1 for e in entries if not e[0]))
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    keep = {n: torch.ones(scores[n].numel(), dtype=torch.bool) for n in names}
    for a, s, p, n, i in entries[:k]:
        keep[n][i] = False
    return {n: keep[n].view_as(scores[n]) for n in names}


@pytest.mark.parametrize(
    "ratio, n, k",
    [
        (0.0, 10, 0), (0.5, 3, 2), (0.5, 5, 3), (0.25, 2, 1), (0.1, 4, 0), (0.125, 4, 1),
        (0.7, 10, 7), (0.9, 1, 1), (0.49, 1, 0), (0.5, 1, 1), (0.3, 5, 2), (0.999, 1000, 999),
        (0.9995, 1000, 1000), (1 / 3, 3, 1), (0.35, 10, 4),
    ],
)
def test_rounding_rule(ratio, n, k):
    assert n_to_prune(ratio, n) == k == math.floor(ratio * n + 0.5)
    keep = select({"w": torch.arange(n, dtype=torch.float64).flip(0)}, ratio)["w"]
    assert int((~keep).sum()) == k


def test_lowest_scores_go_first():
    s = {"w": torch.tensor([[0.5, -2.0, 3.0], [0.1, 7.0, -0.3]])}
    keep = select(s, 0.5)["w"]
    assert torch.equal(keep, torch.tensor([[True, False, True], [False, True, False]]))


def test_ties_broken_by_position_within_and_across_tensors():
    s = {"a": torch.ones(2, 3), "b": torch.ones(4)}
    keep = select(s, 0.5)  # 10 weights, 5 pruned: the first five in name order, row-major
    assert torch.equal(keep["a"], torch.tensor([[False, False, False], [False, False, True]]))
    assert torch.equal(keep["b"], torch.tensor([True, True, True, True]))
    keep = select(s, 0.8)  # 8 pruned: all of "a", then the first two of "b"
    assert not bool(keep["a"].any())
    assert torch.equal(keep["b"], torch.tensor([False, False, True, True]))
    # order of the dict decides, not the names
    s2 = {"b": torch.ones(4), "a": torch.ones(2, 3)}
    keep2 = select(s2, 0.3)
    assert torch.equal(keep2["b"], torch.tensor([False, False, False, True]))
    assert bool(keep2["a"].all())


def test_ties_row_major_in_layer_scope():
    s = {"w": torch.zeros(3, 3)}
    keep = select(s, 0.4, scope="layer")["w"].flatten()  # floor(3.6 + 0.5) = 4
    assert torch.equal(keep, torch.tensor([False] * 4 + [True] * 5))


def test_global_vs_layer_scope():
    s = {"big": torch.tensor([10.0, 11.0, 12.0, 13.0]), "small": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    g = select(s, 0.5, scope="global")
    assert bool(g["big"].all()) and not bool(g["small"].any())
    layer = select(s, 0.5, scope="layer")
    assert torch.equal(layer["big"], torch.tensor([False, False, True, True]))
    assert torch.equal(layer["small"], torch.tensor([False, False, True, True]))


def test_layer_scope_rounds_each_tensor():
    s = {"a": torch.rand(3, generator=torch.Generator().manual_seed(0)), "b": torch.rand(5, generator=torch.Generator().manual_seed(1))}
    keep = select(s, 0.5, scope="layer")
    assert int((~keep["a"]).sum()) == 2 and int((~keep["b"]).sum()) == 3
    # globally the pool of 8 rounds once: 4 pruned
    assert sum(int((~m).sum()) for m in select(s, 0.5).values()) == 4


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_masks_only_shrink(scope):
    g = torch.Generator().manual_seed(2)
    s = {"a": torch.rand(4, 5, generator=g), "b": torch.rand(6, generator=g)}
    prev = {n: torch.rand(t.shape, generator=g) > 0.3 for n, t in s.items()}
    # give the already-pruned weights the best scores: they must still stay pruned
    s = {n: torch.where(prev[n], t, torch.full_like(t, 100.0)) for n, t in s.items()}
    for ratio in [0.0, 0.1, 0.5, 0.8]:
        keep = select(s, ratio, scope=scope, masks=prev)
        for n in s:
            assert not bool((keep[n] & ~prev[n]).any()), f"{n} revived at ratio {ratio}"


def test_already_pruned_count_toward_ratio_and_beyond_k_stay_pruned():
    s = {"w": torch.arange(10, dtype=torch.float64)}
    prev = {"w": torch.tensor([True] * 4 + [False] * 6)}  # 6 already pruned
    keep = select(s, 0.3, masks=prev)["w"]  # k = 3 < 6: nothing more is pruned, the 6 stay pruned
    assert torch.equal(keep, prev["w"])
    keep = select(s, 0.8, masks=prev)["w"]  # k = 8: two more, the lowest live scores (0 and 1)
    assert torch.equal(keep, torch.tensor([False, False, True, True] + [False] * 6))


def test_minus_infinity_scores_do_not_revive_pruned_weights():
    s = {"w": torch.tensor([-math.inf, 1.0, 2.0, 3.0])}
    prev = {"w": torch.tensor([True, True, False, True])}
    keep = select(s, 0.25, masks=prev)["w"]
    assert torch.equal(keep, prev["w"])
    keep = select(s, 0.5, masks=prev)["w"]
    assert torch.equal(keep, torch.tensor([False, True, False, True]))


def test_select_does_not_modify_inputs():
    s = {"w": torch.tensor([3.0, 1.0, 2.0])}
    m = {"w": torch.tensor([True, False, True])}
    s0, m0 = s["w"].clone(), m["w"].clone()
    select(s, 0.6, masks=m)
    assert torch.equal(s["w"], s0) and torch.equal(m["w"], m0)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), float("inf"), -float("inf"), "half", None])
def test_bad_ratio_raises(bad):
    with pytest.raises(SciPruneError, match="ratio"):
        check_ratio(bad)
    with pytest.raises(SciPruneError, match="ratio"):
        select({"w": torch.ones(3)}, bad)


def test_nan_scores_raise():
    with pytest.raises(SciPruneError, match="NaN"):
        select({"a": torch.ones(2), "b": torch.tensor([1.0, float("nan")])}, 0.5)
    with pytest.raises(SciPruneError, match="NaN"):
        select({"a": torch.tensor([float("nan")])}, 0.0, scope="layer")


def test_bad_scope_and_empty_scores_raise():
    with pytest.raises(SciPruneError, match="scope"):
        select({"w": torch.ones(3)}, 0.5, scope="neuron")
    with pytest.raises(SciPruneError):
        select({}, 0.5)


def test_float32_close_scores_are_ranked_in_float64():
    s = {"a": torch.tensor([1.0 + 2**-20], dtype=torch.float32), "b": torch.tensor([1.0], dtype=torch.float64)}
    keep = select(s, 0.5)
    assert bool(keep["a"].all()) and not bool(keep["b"].any())


@settings(max_examples=80, deadline=None)
@given(
    shapes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=3),
    ratio=st.floats(0.0, 0.999),
    scope=st.sampled_from(["global", "layer"]),
    levels=st.integers(1, 6),
    pruned=st.floats(0.0, 0.9),
    seed=st.integers(0, 2**16),
)
def test_property_matches_brute_force(shapes, ratio, scope, levels, pruned, seed):
    g = torch.Generator().manual_seed(seed)
    # few distinct levels, so that ties are common
    s = {f"l{i}.weight": torch.randint(0, levels, shp, generator=g).to(torch.float64) for i, shp in enumerate(shapes)}
    masks = {n: torch.rand(t.shape, generator=g) >= pruned for n, t in s.items()}
    keep = select(s, ratio, scope=scope, masks=masks)
    if scope == "global":
        ref = _brute_force(s, ratio, masks)
    else:
        ref = {n: _brute_force({n: t}, ratio, {n: masks[n]})[n] for n, t in s.items()}
    for n in s:
        assert keep[n].dtype == torch.bool and keep[n].shape == s[n].shape
        assert torch.equal(keep[n], ref[n]), n
        assert not bool((keep[n] & ~masks[n]).any())
