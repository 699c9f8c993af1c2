"""Exact layer-wise OBS (``sciprune.obs_layer``) against dense float64 references on tiny networks.

References: the closed-form OBS step (Hassibi & Stork 1993) with a dense inverse, the least-squares
re-fit of a row (weights and bias) on the layer's inputs, the greedy sequence re-inverting the reduced
H at every step, and elimination-compensation (``sciprune.criteria.ec``) as the bias-only case.
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_close
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from sciprune import MLP
from sciprune.errors import SciPruneError
from sciprune.masks import get_masks, set_masks
from sciprune.obs_layer import apply_obs, layer_hessians, obs_layer_plan
from sciprune.obs_rows import greedy_rows, inverse_hessian
from sciprune.pruning import ec_shifts
from sciprune.selection import n_to_prune

F64 = torch.float64
NAMES = ["linear0.weight", "linear1.weight", "linear2.weight"]


def _net(seed: int = 0, n: int = 64):
    model = MLP(3, [6, 5], 2, seed=seed).to(F64)
    g = torch.Generator().manual_seed(seed + 100)
    X = torch.randn(n, 3, generator=g, dtype=F64)
    return model, X, torch.zeros(n, 2, dtype=F64)


@torch.no_grad()
def _layer_inputs(model: nn.Sequential, X: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each Linear's inputs with a column of ones, by calling the children (not the walker)."""
    out, h = {}, X
    for child, m in model.named_children():
        if isinstance(m, nn.Linear):
            out[f"{child}.weight"] = torch.cat([h, torch.ones(h.shape[0], 1, dtype=F64)], 1)
        h = m(h)
    return out


def _row(model, name):
    lin = model.get_submodule(name.rsplit(".", 1)[0])
    return torch.cat([lin.weight.detach(), lin.bias.detach()[:, None]], 1)


def _ls_refit(Xa: torch.Tensor, w0: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """argmin ||Xa w - Xa w0|| over w with w = 0 off ``support`` (bias in the support)."""
    w = torch.zeros_like(w0)
    w[support] = torch.linalg.lstsq(Xa[:, support], Xa @ w0).solution
    return w


def test_hessian_is_the_augmented_input_gram():
    model, X, Y = _net()
    H = layer_hessians(model, (X, Y), NAMES, batch_size=17)
    for name, Xa in _layer_inputs(model, X).items():
        assert_close(H[name], 2 * Xa.T @ Xa / X.shape[0], rtol=1e-12, what=name)


def test_single_removal_is_closed_form_obs_and_least_squares_refit():
    model, X, Y = _net()
    inputs = _layer_inputs(model, X)
    for name in NAMES:
        Xa, W = inputs[name], _row(model, name)
        H = 2 * Xa.T @ Xa / X.shape[0]
        P, zero_in = inverse_hessian(H, 0.0, name)
        m = W.shape[1]
        cand = torch.ones_like(W, dtype=torch.bool)
        cand[:, -1] = False
        trace = greedy_rows(W, P, cand, zero_in, bias=True, counts=torch.ones(W.shape[0], dtype=torch.long))
        Pd = torch.linalg.inv(H)
        for i in range(W.shape[0]):
            w = W[i]
            j = int(torch.argmin(w[:-1] ** 2 / Pd.diagonal()[:-1]))
            assert int(trace.order[i, 0]) == j
            closed = w - (w[j] / Pd[j, j]) * Pd[:, j]
            support = torch.ones(m, dtype=torch.bool)
            support[j] = False
            refit = _ls_refit(Xa, w, support)
            assert_close(trace.weights[i], closed, rtol=1e-10, what=f"{name} row {i} closed form")
            assert_close(trace.weights[i], refit, rtol=1e-10, what=f"{name} row {i} least squares")
            change = ((Xa @ (refit - w)) ** 2).mean()  # the predicted loss is the true output change
            assert_close(trace.losses[i, 0], change, rtol=1e-10, what=f"{name} row {i} loss")


def _reinverting_greedy(H, w, cand):
    """Greedy OBS that inverts the reduced H (live weights and bias) at every step."""
    w, cand = w.clone(), cand.clone()
    order, losses, ws = [], [], [w.clone()]
    live = cand.clone()
    live[-1] = True
    while cand.any():
        idx = torch.nonzero(live).flatten()
        P = torch.linalg.inv(H[idx][:, idx])
        score = torch.where(cand[idx], w[idx] ** 2 / P.diagonal(), torch.inf)
        q = int(torch.argmin(score))
        j = int(idx[q])
        w[idx] -= (w[j] / P[q, q]) * P[:, q]
        w[j] = 0.0
        order.append(j), losses.append(float(score[q]) / 2), ws.append(w.clone())
        cand[j] = live[j] = False
    return order, torch.tensor(losses, dtype=F64), ws


def test_greedy_downdates_equal_reinverting_each_step_with_pruned_weights():
    model, X, Y = _net(seed=3)
    name = "linear1.weight"
    Xa, W = _layer_inputs(model, X)[name], _row(model, name)
    H = 2 * Xa.T @ Xa / X.shape[0]
    cand = torch.rand(W.shape, generator=torch.Generator().manual_seed(1)) > 0.3
    cand[:, -1] = False
    W = torch.where(cand | (torch.arange(W.shape[1]) == W.shape[1] - 1), W, 0.0)  # pruned weights are 0
    P, zero_in = inverse_hessian(H, 0.0, name)
    first = greedy_rows(W, P, cand, zero_in, bias=True)
    for i in range(W.shape[0]):
        order, losses, ws = _reinverting_greedy(H, W[i], cand[i])
        n = len(order)
        assert first.order[i, :n].tolist() == order and bool((first.order[i, n:] == -1).all())
        assert_close(first.losses[i, :n], losses, rtol=1e-9, what=f"row {i} losses")
        for k in range(n + 1):
            counts = torch.full((W.shape[0],), k, dtype=torch.long)
            got = greedy_rows(W, P, cand, zero_in, bias=True, counts=counts).weights[i]
            assert_close(got, ws[k], rtol=1e-9, what=f"row {i} after {k} removals")


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_exact_counts_nested_masks_and_predicted_loss(scope):
    model, X, Y = _net(seed=1)
    inputs = _layer_inputs(model, X)
    n_all = sum(model.get_parameter(n).numel() for n in NAMES)
    previous = None
    for ratio in (0.0, 0.2, 0.5, 0.77, 0.95):
        res = obs_layer_plan(model, (X, Y), ratio, scope=scope, damp=0.0)
        removed = {n: int((~res.masks[n]).sum()) for n in NAMES}
        if scope == "global":
            assert sum(removed.values()) == n_to_prune(ratio, n_all)
        else:
            assert removed == {n: n_to_prune(ratio, model.get_parameter(n).numel()) for n in NAMES}
        if previous is not None:
            assert all(bool((res.masks[n] <= previous[n]).all()) for n in NAMES)  # nested
        previous = res.masks
        pruned = copy.deepcopy(model)
        report = apply_obs(pruned, res)
        assert report.pruned == sum(removed.values())
        for n in NAMES:  # damp = 0: the predicted loss is each row's true mean square output change
            change = ((inputs[n] @ (_row(pruned, n) - _row(model, n)).T) ** 2).mean(0)
            assert_close(res.losses[n], change, rtol=1e-9, what=f"{n} at {ratio}")
            assert bool((pruned.get_parameter(n)[~res.masks[n]] == 0).all())


def test_global_allocation_takes_the_smallest_recorded_increases():
    model, X, Y = _net(seed=2)
    H = layer_hessians(model, (X, Y), NAMES)
    traces = {}
    for n in NAMES:
        P, z = inverse_hessian(H[n], 0.0, n)
        W = _row(model, n)
        cand = torch.ones_like(W, dtype=torch.bool)
        cand[:, -1] = False
        traces[n] = greedy_rows(W, P, cand, z, bias=True).losses
    res = obs_layer_plan(model, (X, Y), 0.6, damp=0.0)
    chosen, rest = [], []
    for n in NAMES:
        counts = (~res.masks[n]).sum(1)
        steps = torch.arange(traces[n].shape[1]).unsqueeze(0) < counts.unsqueeze(1)
        chosen.append(traces[n][steps]), rest.append(traces[n][~steps])
    chosen, rest = torch.cat(chosen), torch.cat(rest)
    assert chosen.numel() == n_to_prune(0.6, chosen.numel() + rest.numel())
    assert float(chosen.max()) <= float(rest.min())


@settings(max_examples=15, deadline=None)
@given(ratio=st.floats(0.0, 0.999), pre=st.floats(0.0, 0.9), scope=st.sampled_from(["global", "layer"]))
def test_pruned_weights_stay_pruned_and_counts_are_exact(ratio, pre, scope):
    model, X, Y = _net(seed=4)
    g = torch.Generator().manual_seed(5)
    set_masks(model, {n: torch.rand(model.get_parameter(n).shape, generator=g) >= pre for n in NAMES})
    before = get_masks(model)
    res = obs_layer_plan(model, (X, Y), ratio, scope=scope, damp=1e-8)
    apply_obs(model, res)
    after = get_masks(model)
    pools = [NAMES] if scope == "global" else [[n] for n in NAMES]
    for pool in pools:
        n_all = sum(before[n].numel() for n in pool)
        dead = sum(int((~before[n]).sum()) for n in pool)
        assert sum(int((~after[n]).sum()) for n in pool) == max(n_to_prune(ratio, n_all), dead)
    for n in NAMES:
        assert bool((after[n] <= before[n]).all())
        assert bool((model.get_parameter(n)[~after[n]] == 0).all())


def test_bias_only_obs_is_elimination_compensation():
    """Restricting the OBS update to (w_j, bias) gives EC's shift W_ij E[a_j] (output layer: G_i = 1)."""
    model, X, Y = _net(seed=6)
    name = "linear2.weight"
    H = layer_hessians(model, (X, Y), [name])[name]
    shifts = ec_shifts(model, (X, Y), names=[name])[name]
    W = model.get_parameter(name).detach()
    b = H.shape[0] - 1
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            P = torch.linalg.inv(H[[j, b]][:, [j, b]])
            move = -(W[i, j] / P[0, 0]) * P[:, 0]
            assert_close(move[0], -W[i, j], rtol=1e-12)
            assert_close(move[1], shifts[i, j], rtol=1e-10, what=f"bias shift of ({i}, {j})")


@pytest.mark.parametrize("ratio", [0.3, 0.8])
def test_obs_reconstruction_never_worse_than_ec_at_the_same_mask(ratio):
    model, X, Y = _net(seed=7)
    inputs = _layer_inputs(model, X)
    res = obs_layer_plan(model, (X, Y), ratio, damp=0.0)
    shifts = ec_shifts(model, (X, Y), names=NAMES)
    obs_model = copy.deepcopy(model)
    apply_obs(obs_model, res)
    for n in NAMES:
        w0, removed = _row(model, n), ~res.masks[n]
        ec = w0.clone()
        ec[:, :-1][removed] = 0.0
        ec[:, -1] += (shifts[n] * removed).sum(1)
        err_obs = ((inputs[n] @ (_row(obs_model, n) - w0).T) ** 2).mean(0)
        err_ec = ((inputs[n] @ (ec - w0).T) ** 2).mean(0)
        assert bool((err_obs <= err_ec * (1 + 1e-10) + 1e-14).all()), (n, err_obs, err_ec)
        if bool(removed.any()):
            assert float(err_obs.sum()) < float(err_ec.sum())


def test_dampening_handles_duplicate_inputs_and_zero_inputs_cost_nothing():
    model, X, Y = _net(seed=8)
    Xdup = torch.cat([X[:, :2], X[:, :1]], 1)  # input 2 duplicates input 0: H of linear0 is singular
    with pytest.raises(SciPruneError, match="singular.*damp"):
        obs_layer_plan(model, (Xdup, Y), 0.5, damp=0.0)
    res = obs_layer_plan(model, (Xdup, Y), 0.5, damp=1e-3)
    assert sum(int((~m).sum()) for m in res.masks.values()) == n_to_prune(0.5, 6 * 3 + 5 * 6 + 2 * 5)
    assert all(bool(torch.isfinite(u).all()) for u in res.updates.values())
    Xzero = X.clone()
    Xzero[:, 1] = 0.0  # an input that is zero on all the data: its weights go first, at no cost
    res = obs_layer_plan(model, (Xzero, Y), 0.34, scope="layer", names=["linear0.weight"], damp=0.0)
    assert (~res.masks["linear0.weight"]).sum() == n_to_prune(0.34, 18) == 6
    assert bool((~res.masks["linear0.weight"][:, 1]).all())
    assert_close(res.losses["linear0.weight"], torch.zeros(6, dtype=F64), rtol=1e-12)


class _NotAChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("kwargs, match", [
    ({"ratio": 1.0}, "ratio"), ({"ratio": -0.1}, "ratio"), ({"ratio": float("nan")}, "ratio"),
    ({"damp": -1.0}, "damp"), ({"damp": float("nan")}, "damp"), ({"damp": True}, "damp"), ({"damp": "1e-3"}, "damp"),
    ({"scope": "row"}, "scope"), ({"names": ["linear9.weight"]}, "names"), ({"data": None}, "data"),
    ({"model": _NotAChain()}, "Sequential"), ({"model": nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))}, "elementwise"),
])
def test_bad_input_is_one_line_error(kwargs, match):
    model, X, Y = _net()
    args = {"model": model, "data": (X, Y), "ratio": 0.5, **kwargs}
    with pytest.raises(SciPruneError, match=match) as err:
        obs_layer_plan(args.pop("model"), args.pop("data"), args.pop("ratio"), **args)
    assert "\n" not in str(err.value)


def test_apply_refuses_a_result_of_another_model():
    model, X, Y = _net()
    res = obs_layer_plan(model, (X, Y), 0.5, damp=0.0)
    other = MLP(3, [7, 5], 2, seed=0).to(F64)
    with pytest.raises(SciPruneError, match="does not fit"):
        apply_obs(other, res)
    with pytest.raises(SciPruneError, match="OBSResult"):
        apply_obs(model, {"masks": {}})
    assert bool((other.linear0.weight != 0).all())  # nothing changed
