"""Whole-network OBS (``sciprune.obs_network``) against dense float64 references on tiny networks.

References: the Gauss-Newton matrix ``J^T H_out J`` from ``torch.func.jacrev`` over all parameters
(and the full Hessian of the loss where the residual vanishes), the closed-form OBS step of Hassibi &
Stork (1993) with a dense inverse, and the greedy sequence re-inverting the reduced ``H`` at each step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, jacrev

from sciprune import MLP
from sciprune.errors import SciPruneError
from sciprune.masks import get_masks, set_masks
from sciprune.obs_ggn import network_ggn, network_layout
from sciprune.obs_layer import apply_obs
from sciprune.obs_network import obs_network_plan, prepare_network_obs
from sciprune.obs_surgery import compact_in_place
from sciprune.selection import n_to_prune

F64 = torch.float64


def _net(seed=0, n=64, outputs=2, loss="mse", widths=(4,), act="tanh"):
    model = MLP(2, list(widths), outputs, act, seed=seed).to(F64)
    g = torch.Generator().manual_seed(seed + 100)
    X = torch.randn(n, 2, generator=g, dtype=F64)
    Y = torch.randn(n, outputs, generator=g, dtype=F64) if loss == "mse" else torch.randint(0, outputs, (n,), generator=g)
    return model, X, Y


def _call(model):
    layout = network_layout(model)

    def f(theta, X):
        p = {n: theta[layout.offsets[n]:layout.offsets[n] + s.numel()].view(s) for n, s in layout.shapes.items()}
        return functional_call(model, p, (X,))

    return layout, f


def _dense_ggn(model, X, loss):
    """(1/N) sum_n J_n^T H_out,n J_n with J from jacrev over all parameters, H_out written out."""
    layout, f = _call(model)
    theta = layout.flatten(dict(model.named_parameters()))
    J = jacrev(f)(theta, X)  # (N, C, D)
    N, C, _ = J.shape
    if loss == "mse":
        Hout = (2.0 / C) * torch.eye(C, dtype=F64).expand(N, C, C)
    else:
        p = torch.softmax(f(theta, X), -1).detach()
        Hout = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    return torch.einsum("ncd,nce,nef->df", J, Hout, J) / N, theta, layout


def _flat_masks(model, layout):
    masks = get_masks(model)
    return layout.flatten({n: masks.get(n, torch.ones(s, dtype=torch.bool)) for n, s in layout.shapes.items()}) > 0


def _weights(layout):
    return layout.flatten({n: torch.full(s, float(layout.layer[n] == n)) for n, s in layout.shapes.items()}) > 0


def _brute(H, theta, live, is_w, steps, block):
    """Greedy OBS re-inverting the reduced H at every step: (theta, removed, step losses)."""
    theta, live = theta.clone(), live.clone()
    removed, losses = torch.zeros_like(live), []
    for _ in range(steps):
        A = torch.nonzero(live).flatten()
        P = torch.linalg.inv(H[A][:, A])
        w = theta[A]
        sal = torch.where(is_w[A], w * w / (2 * P.diagonal()), float("inf"))
        Q = torch.sort(sal, stable=True).indices[:block]
        s = torch.linalg.solve(P[Q][:, Q], w[Q])
        theta[A] -= P[:, Q] @ s
        theta[A[Q]] = 0.0
        live[A[Q]] = False
        removed[A[Q]] = True
        losses.append(float(0.5 * w[Q] @ s))
    return theta, removed, losses


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_ggn_is_jacobian_product_from_torch_func(loss):
    model, X, Y = _net(outputs=3, loss=loss, widths=(4, 3))
    G, theta, layout = _dense_ggn(model, X, loss)
    H, N, name = network_ggn(model, [(X[:23], Y[:23]), (X[23:], Y[23:])], layout)
    assert (N, name) == (64, loss)
    assert_close(H, G, rtol=1e-12, what="GGN")


def test_ggn_of_a_chain_with_a_bias_free_layer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 3, bias=False), torch.nn.Tanh(), torch.nn.Linear(3, 2)).to(F64)
    X = torch.randn(20, 2, dtype=F64)
    G, _, layout = _dense_ggn(model, X, "mse")
    assert layout.names == ("0.weight", "2.weight", "2.bias")
    assert_close(network_ggn(model, [(X, X)], layout)[0], G, rtol=1e-12, what="GGN")
    res = obs_network_plan(model, (X, X), 0.5, damp=1e-6)
    assert set(res.updates) == set(layout.names) and set(res.masks) == {"0.weight", "2.weight"}


def test_ggn_equals_the_hessian_where_the_residual_vanishes():
    model, X, _ = _net(outputs=2, widths=(3, 3))
    layout, f = _call(model)
    theta = layout.flatten(dict(model.named_parameters()))
    T = f(theta, X).detach()  # targets = the network's own outputs: zero residual
    hess = torch.autograd.functional.hessian(lambda th: F.mse_loss(f(th, X), T), theta)
    H, _, _ = network_ggn(model, [(X, T)], layout)
    assert_close(H, hess, rtol=1e-12, what="GGN vs Hessian")


@pytest.mark.parametrize("loss, damp", [("mse", 0.0), ("mse", 1e-3), ("cross_entropy", 1e-3)])
def test_first_removal_is_closed_form_obs(loss, damp):
    model, X, Y = _net(loss=loss, outputs=3 if loss == "cross_entropy" else 2)
    H, theta, layout = _dense_ggn(model, X, loss)
    H = H + damp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=F64)
    is_w = _weights(layout)
    res = obs_network_plan(model, (X, Y), 1 / int(is_w.sum()), damp=damp)
    Pd = torch.linalg.inv(H)
    sal = torch.where(is_w, theta**2 / (2 * Pd.diagonal()), float("inf"))
    q = int(sal.argmin())
    expected = -(theta[q] / Pd[q, q]) * Pd[:, q]
    delta = layout.flatten(res.updates)
    assert_close(delta, expected, rtol=1e-9, what="OBS update")
    quad = 0.5 * delta @ H @ delta
    assert abs(res.stats.predicted_increase - float(quad)) <= 1e-10 * float(quad)
    assert abs(float(layout.flatten(res.losses | {n: torch.zeros(s) for n, s in layout.shapes.items() if n not in res.losses})[q])
               - float(sal[q])) <= 1e-10 * float(sal[q])
    removed = ~layout.flatten({n: res.masks.get(n, torch.ones(s, dtype=torch.bool)) for n, s in layout.shapes.items()}).bool()
    assert torch.nonzero(removed).flatten().tolist() == [q]


@pytest.mark.parametrize("block, steps", [(1, 9), (2, 5), (4, 3)])
@pytest.mark.parametrize("prune_first", [False, True])
def test_downdates_equal_reinverting_the_reduced_h(block, steps, prune_first):
    model, X, Y = _net(seed=3, widths=(5,))
    if prune_first:  # already-pruned weights: out of the problem, never updated, still zero
        set_masks(model, {"linear0.weight": torch.tensor([[1, 0], [1, 1], [0, 1], [1, 1], [1, 1]], dtype=torch.bool)})
    H, theta, layout = _dense_ggn(model, X, "mse")
    live, is_w = _flat_masks(model, layout), _weights(layout)
    n_w, dead = int(is_w.sum()), int((~live).sum())
    k = min(steps * block, n_w - dead)
    ratio = (k + dead) / n_w
    assert n_to_prune(ratio, n_w) - dead == k
    res = obs_network_plan(model, (X, Y), ratio, block=block)
    ref, removed, losses = _brute(H, theta, live, is_w, -(-k // block), block)
    assert_close(layout.flatten(res.updates), ref - theta, rtol=1e-8, what="updates")
    got = ~(_flat_masks_of(res.masks, layout)) & live
    assert torch.equal(got, removed)
    assert_close(res.stats.step_losses, torch.tensor(losses, dtype=F64), rtol=1e-8, what="step losses")
    total = layout.flatten(res.updates)
    quad = 0.5 * total @ H @ total
    assert abs(res.stats.predicted_increase - float(quad)) <= 1e-9 * float(quad)
    assert bool((layout.flatten(res.updates)[~live] == 0).all())


def _flat_masks_of(masks, layout):
    return layout.flatten({n: masks.get(n, torch.ones(s, dtype=torch.bool)) for n, s in layout.shapes.items()}) > 0


@settings(max_examples=25, deadline=None)
@given(m=st.integers(1, 40), seed=st.integers(0, 100), chunk=st.integers(1, 200))
def test_in_place_compaction_is_the_principal_submatrix(m, seed, chunk):
    g = torch.Generator().manual_seed(seed)
    P = torch.randn(m, m, generator=g, dtype=F64)
    keep = torch.nonzero(torch.rand(m, generator=g) < 0.6).flatten()
    expected = P[keep][:, keep]
    got = compact_in_place(P.clone(), keep, chunk)
    assert torch.equal(got, expected)


def test_layer_scope_uses_the_whole_networks_h_with_a_count_per_layer():
    model, X, Y = _net(seed=5, widths=(4, 3))
    res = obs_network_plan(model, (X, Y), 0.5, scope="layer", damp=1e-6)
    for n, m in res.masks.items():
        assert int((~m).sum()) == n_to_prune(0.5, m.numel()), n
    moved = [n for n, d in res.updates.items() if n.endswith("bias") and bool((d != 0).any())]
    assert moved  # biases move with the weights of the other layers


def test_examples_draw_the_rows_obd_draws():
    model, X, Y = _net(n=48)
    rows = torch.randperm(48, generator=torch.Generator().manual_seed(7))[:30].sort().values
    a = obs_network_plan(model, (X, Y), 0.3, examples=30, seed=7, damp=1e-8)
    b = obs_network_plan(model, (X[rows], Y[rows]), 0.3, damp=1e-8)
    assert a.stats.rows == 30
    for n in a.updates:
        assert_close(a.updates[n], b.updates[n], rtol=1e-9, what=n)


def test_prepared_solves_equal_separate_plans_and_scores_are_first_saliencies():
    model, X, Y = _net(seed=2)
    prepared = prepare_network_obs(model, (X, Y), damp=1e-6)
    for ratio, scope, block in [(0.3, "global", 1), (0.6, "layer", 3), (0.3, "global", 1)]:
        got = prepared.solve(ratio, scope, block=block)
        ref = obs_network_plan(model, (X, Y), ratio, scope=scope, block=block, damp=1e-6)
        for n in ref.updates:
            assert_close(got.updates[n], ref.updates[n], rtol=1e-12, what=n)
        assert all(torch.equal(got.masks[n], ref.masks[n]) for n in ref.masks)
    H, theta, layout = _dense_ggn(model, X, "mse")
    Pd = torch.linalg.inv(H + 1e-6 * H.diagonal().mean() * torch.eye(H.shape[0], dtype=F64))
    sal = layout.unflatten(theta**2 / (2 * Pd.diagonal()))
    for n, v in prepared.scores().items():
        assert_close(v, sal[n], rtol=1e-9, what=n)
    prepared.solve(0.5, consume=True)
    with pytest.raises(SciPruneError, match="consumed"):
        prepared.solve(0.5)


def test_apply_writes_updates_and_masks():
    model, X, Y = _net()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    res = obs_network_plan(model, (X, Y), 0.4)
    report = apply_obs(model, res)
    assert report.method == "obs" and report.pruned == n_to_prune(0.4, report.total)
    for n, p in model.named_parameters():
        assert_close(p.detach(), before[n] + res.updates[n], rtol=1e-14, what=n)
        if n in res.masks:
            assert bool((p.detach()[~res.masks[n]] == 0).all())


@settings(max_examples=20, deadline=None)
@given(widths=st.lists(st.integers(1, 4), min_size=1, max_size=2), ratio=st.floats(0.0, 0.95),
       block=st.integers(1, 4), scope=st.sampled_from(["global", "layer"]), pre=st.floats(0.0, 0.6),
       seed=st.integers(0, 1000))
def test_sparsity_is_exact_and_masks_only_shrink(widths, ratio, block, scope, pre, seed):
    model, X, Y = _net(seed=seed, n=16, widths=widths, act="relu")
    g = torch.Generator().manual_seed(seed)
    set_masks(model, {n: torch.rand(m.shape, generator=g) >= pre for n, m in get_masks(model).items()})
    before = get_masks(model)
    res = obs_network_plan(model, (X, Y), ratio, scope=scope, block=block, damp=1e-3)
    assert set(res.masks) == set(before) and all(n.endswith("weight") for n in res.masks)
    pools = [list(before)] if scope == "global" else [[n] for n in before]
    for pool in pools:
        total = sum(before[n].numel() for n in pool)
        dead = sum(int((~before[n]).sum()) for n in pool)
        assert sum(int((~res.masks[n]).sum()) for n in pool) == max(n_to_prune(ratio, total), dead)
    for n, m in before.items():
        assert not bool((res.masks[n] & ~m).any())
        assert bool((res.updates[n][~m] == 0).all())


def test_size_limit_names_count_limit_memory_and_obs_layer():
    model = MLP(2, [40] * 6, 1, seed=0)
    X = torch.randn(8, 2)
    with pytest.raises(SciPruneError) as e:
        obs_network_plan(model, (X, X[:, :1]), 0.5, max_params=1000)
    msg = str(e.value)
    assert "8361" in msg and "max_params = 1000" in msg and "MiB" in msg and "obs-layer" in msg and "\n" not in msg
    with pytest.raises(SciPruneError, match="10000"):
        obs_network_plan(MLP(2, [100, 100], 1, seed=0), (X, X[:, :1]), 0.5)


def test_singular_h_without_damp_names_damp():
    model, X, Y = _net(n=3)
    with pytest.raises(SciPruneError, match="singular.*damp > 0"):
        obs_network_plan(model, (X, Y), 0.5)
    model, X, Y = _net(loss="cross_entropy", outputs=3)  # many rows, yet the logits' common shift is flat
    with pytest.raises(SciPruneError, match="cross_entropy.*common shift of the logits.*damp > 0"):
        obs_network_plan(model, (X, Y), 0.5)


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"), ({"scope": "net"}, "scope"),
    ({"block": 0}, "block"), ({"block": 1.5}, "block"), ({"block": True}, "block"),
    ({"damp": -1.0}, "damp"), ({"damp": float("nan")}, "damp"), ({"examples": 0}, "examples"),
    ({"examples": 65}, "examples must be at most the 64 rows"), ({"max_params": 0}, "max_params"),
    ({"seed": -1}, "seed"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_inputs_one_line(kwargs, match):
    model, X, Y = _net()
    args = {"ratio": 0.5} | kwargs
    ratio = args.pop("ratio")
    with pytest.raises(SciPruneError, match=match) as e:
        obs_network_plan(model, (X, Y), ratio, **args)
    assert "\n" not in str(e.value)
