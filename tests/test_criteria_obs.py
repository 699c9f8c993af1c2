"""The ``obs`` criterion (whole-network OBS through the joint mechanism): the same numbers as
:func:`sciprune.obs_network_plan` + :func:`sciprune.apply_obs`, one inverse per plan, its size limit
checked at case load, and its place outside ``methods = ["all"]``. The method's own numerics are tested
against dense references in tests/test_obs_network.py; studies with it in tests/test_joint_methods.py."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import tiny_case
from malformed import assert_user_error, invoke, snapshot

import sciprune
from sciprune import criteria
from sciprune.config import load_case
from sciprune.masks import get_masks
from sciprune.models import MLP

F64 = torch.float64


def _net(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = MLP(2, [6, 5], 1, "tanh", seed=seed).to(F64)
    X = torch.rand(160, 2, generator=g, dtype=F64) * 2 - 1
    return model, (X, torch.sin(3 * X[:, :1]) * X[:, 1:])


def _params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("scope,block", [("global", 1), ("global", 3), ("layer", 2)])
def test_prune_obs_equals_obs_network_plan_and_apply_obs(scope, block):
    model, data = _net()
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    sciprune.prune(a, "obs", 0.6, data, scope=scope, damp=1e-6, block=block)
    sciprune.apply_obs(b, sciprune.obs_network_plan(b, data, 0.6, scope=scope, damp=1e-6, block=block))
    pa, pb = _params(a), _params(b)
    assert all(torch.equal(pa[n], pb[n]) for n in pa)
    assert all(torch.equal(m, get_masks(b)[n]) for n, m in get_masks(a).items())


def test_one_plan_serves_every_ratio_with_one_inverse(monkeypatch):
    import sciprune.obs_network as obs_network

    model, data = _net(1)
    calls = []
    real = obs_network.ggn_inverse
    monkeypatch.setattr(obs_network, "ggn_inverse", lambda *a, **k: calls.append(1) or real(*a, **k))
    plan = sciprune.plan(model, "obs", data, damp=1e-6)
    for ratio in (0.3, 0.7, 0.3):
        got = copy.deepcopy(model)
        sciprune.apply_plan(got, plan, ratio)
        want = copy.deepcopy(model)
        sciprune.apply_obs(want, real_plan(want, data, ratio))
        assert all(torch.equal(p, q) for p, q in zip(got.parameters(), want.parameters())), ratio
    assert len(calls) == 1 + 3  # the plan's inverse, then one per reference plan


def real_plan(model, data, ratio):
    return sciprune.obs_network_plan(model, data, ratio, damp=1e-6)


def test_compensate_false_keeps_the_choice_without_moving_the_rest():
    model, data = _net(2)
    full, bare = copy.deepcopy(model), copy.deepcopy(model)
    sciprune.prune(full, "obs", 0.5, data, damp=1e-6)
    sciprune.prune(bare, "obs", 0.5, data, compensate=False, damp=1e-6)
    assert all(torch.equal(m, get_masks(bare)[n]) for n, m in get_masks(full).items())
    for (n, p), q in zip(model.named_parameters(), bare.parameters()):
        keep = get_masks(bare)[n] if n in get_masks(bare) else torch.ones_like(p, dtype=torch.bool)
        assert torch.equal(torch.where(keep, p, torch.zeros_like(p)), q), n


def test_obs_is_listed_but_not_part_of_all():
    assert "obs" in criteria.available(granularity="weight") and criteria.is_joint("obs")
    assert "obs" not in criteria.all_methods() and "obs-layer" in criteria.all_methods()


def test_a_case_with_obs_on_too_large_a_network_is_refused_before_any_work(tmp_path, tiny_pdebench):
    path = tmp_path / "big.toml"
    path.write_text(tiny_case(tmp_path / "out", tiny_pdebench, prune={"methods": ["obs"],
                                                                      "options": {"obs": {"max_params": 10}}}))
    before = snapshot(tmp_path)
    for command in ("run", "sweep"):
        assert_user_error(invoke([command, path, "--quiet"]), "obs", "obs-layer", watch=(tmp_path,), before=before)


def test_a_case_within_the_limit_passes_the_check(tmp_path, tiny_pdebench):
    from sciprune.study import check_networks

    path = tmp_path / "ok.toml"
    path.write_text(tiny_case(tmp_path / "out", tiny_pdebench, prune={"methods": ["obs"]}))
    check_networks(load_case(path))  # 2-4-1: 17 parameters


def test_a_subset_of_the_weights_is_the_pool_and_the_rest_only_move():
    from sciprune.masks import prunable_names
    from sciprune.selection import n_to_prune

    model, data = _net(3)
    first = prunable_names(model)[0]
    pruned = copy.deepcopy(model)
    sciprune.prune(pruned, "obs", 0.5, data, names=[first], damp=1e-6)
    masks = get_masks(pruned)
    assert int((~masks[first]).sum()) == n_to_prune(0.5, masks[first].numel())
    assert all(bool(m.all()) for n, m in masks.items() if n != first)
    moved = [n for n, p in model.named_parameters() if n != first and not torch.equal(p, dict(pruned.named_parameters())[n])]
    assert moved  # the other layers compensate
