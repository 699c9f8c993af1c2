"""Score once, prune at many ratios: ``plan`` + ``apply_plan`` equal ``prune`` call by call."""

import copy

import pytest
import torch

from sciprune import MLP, apply_plan, get_masks, plan, prune
from sciprune.errors import SciPruneError


def _data(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=torch.float64)
    return X, torch.sin(3 * X[:, :1]) * X[:, 1:]


@pytest.mark.parametrize("method,compensate", [("ec", None), ("ec", False), ("magnitude", True),
                                                ("gradient", None), ("random", None)])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_plan_then_apply_equals_prune(method, compensate, scope):
    dense = MLP(2, [8, 8], 1, "tanh", seed=1).double()
    data = _data()
    p = plan(dense, method, data, compensate=compensate, seed=3)
    for ratio in [0.1, 0.5, 0.9]:
        a, b = copy.deepcopy(dense), copy.deepcopy(dense)
        ra = prune(a, method, ratio, data, scope=scope, compensate=compensate, seed=3)
        rb = apply_plan(b, p, ratio, scope=scope)
        assert ra.pruned == rb.pruned and ra.compensated == rb.compensated
        for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
            assert na == nb and torch.equal(ta, tb), na
    assert p.shifts is None or compensate is not False


def test_one_plan_gives_nested_masks():
    dense = MLP(2, [8, 8], 1, "tanh", seed=1).double()
    p = plan(dense, "ec", _data())
    kept = []
    for ratio in [0.2, 0.5, 0.8]:
        m = copy.deepcopy(dense)
        apply_plan(m, p, ratio)
        kept.append(get_masks(m))
    for small, large in zip(kept[1:], kept[:-1]):
        for n in small:
            assert not (small[n] & ~large[n]).any()


def test_plan_that_does_not_fit_is_refused():
    p = plan(MLP(2, [8], 1, "tanh", seed=0), "magnitude")
    with pytest.raises(SciPruneError, match="does not fit"):
        apply_plan(MLP(2, [9], 1, "tanh", seed=0), p, 0.5)


def test_bad_scope_is_refused_before_scoring():
    with pytest.raises(SciPruneError, match="scope"):
        prune(MLP(2, [8], 1, "tanh", seed=0), "ec-exact", 0.5, None, scope="row")



def test_planner_scores_once_and_derives_variants():
    from sciprune.planner import Planner

    dense = MLP(2, [8, 8], 1, "tanh", seed=1).double()
    data = _data()
    planner = Planner(dense, data, seed=3)
    base = planner("ec")
    assert planner("ec") is base and planner("ec", None) is base  # cached: scored once
    assert planner("ec", False).shifts is None and planner("ec", False).scores is base.scores
    with_shift = planner("magnitude", True)
    ref = plan(dense, "magnitude", data, compensate=True, seed=3)
    for n in ref.shifts:
        assert torch.equal(with_shift.shifts[n], ref.shifts[n])
    assert planner("gradient", True).shifts is with_shift.shifts  # EC shifts computed once for all methods
