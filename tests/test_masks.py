"""The one mask mechanism: pruned weights stay exactly zero, masks only shrink, models stay plain."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sciprune
from sciprune.masks import enforce, get_masks, mask_grads, mask_pairs, prunable_names, remove_masks, set_masks, sparsity
from sciprune.selection import n_to_prune




def _model(seed=0, dtype=torch.float64, widths=(12, 10)):
    return sciprune.MLP(3, list(widths), 2, "tanh", seed=seed).to(dtype)


def _data(n=64, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=dtype)
    Y = torch.stack([torch.sin(X[:, 0]) * X[:, 1], X[:, 2] ** 2], dim=1)
    return X, Y


def _random_masks(model, ratio=0.6, seed=5):
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g) >= ratio for n in prunable_names(model)}


def _assert_pruned_zero(model, masks):
    params = dict(model.named_parameters())
    for n, m in masks.items():
        pruned = params[n].detach()[~m]
        assert pruned.numel() > 0
        assert torch.equal(pruned, torch.zeros_like(pruned)), f"{n}: {int((pruned != 0).sum())} pruned weights revived"


def _train(model, opt, X, Y, steps, *, lbfgs=False):
    step = sciprune.MaskedStep(opt, model)
    for _ in range(steps):
        if lbfgs:
            def closure():
                opt.zero_grad()
                loss = nn.functional.mse_loss(model(X), Y)
                loss.backward()
                return loss

            step(closure)
        else:
            opt.zero_grad()
            nn.functional.mse_loss(model(X), Y).backward()
            step()


OPTIMIZERS = {
    "adam_l2": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=1e-2, momentum=0.9, weight_decay=1e-3, nesterov=True),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_pruned_weights_stay_zero_1000_steps(name):
    model = _model()
    X, Y = _data()
    masks = _random_masks(model)
    set_masks(model, masks)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = OPTIMIZERS[name](model.parameters())
    _train(model, opt, X, Y, 1000)
    _assert_pruned_zero(model, masks)
    # gradients were masked before each step: pruned weights have zero gradient and zero optimiser state
    params = dict(model.named_parameters())
    for n, m in masks.items():
        p = params[n]
        assert bool((p.grad[~m] == 0).all()) and bool((p.grad[m] != 0).any()), n
        for key in ("exp_avg", "exp_avg_sq", "momentum_buffer"):
            if key in opt.state[p]:
                assert bool((opt.state[p][key][~m] == 0).all()), f"{n}: {key} of pruned weights is non-zero"
    # the live weights did train
    for n, p in model.named_parameters():
        live = masks.get(n, torch.ones_like(p, dtype=torch.bool))
        assert not torch.equal(p.detach()[live], before[n][live]), n


def test_pruned_weights_stay_zero_lbfgs():
    model = _model()
    X, Y = _data()
    masks = _random_masks(model)
    set_masks(model, masks)
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=20, history_size=10, line_search_fn="strong_wolfe")
    loss0 = float(nn.functional.mse_loss(model(X), Y).detach())
    params = dict(model.named_parameters())
    seen = []

    def closure():  # L-BFGS evaluates along its search direction: pruned weights must stay zero there too
        seen.append(all(bool((params[n].detach()[~m] == 0).all()) for n, m in masks.items()))
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), Y)
        loss.backward()
        return loss

    step = sciprune.MaskedStep(opt, model)
    for _ in range(50):
        step(closure)
    assert len(seen) > 50 and all(seen)
    _assert_pruned_zero(model, masks)
    assert float(nn.functional.mse_loss(model(X), Y).detach()) < loss0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_created_before_pruning_with_nonzero_moments(name):
    model = _model()
    X, Y = _data()
    opt = OPTIMIZERS[name](model.parameters())
    _train(model, opt, X, Y, 20)  # dense training: every moment / momentum buffer is non-zero
    state = opt.state[model.linear0.weight]
    moment = state.get("exp_avg", state.get("momentum_buffer"))
    assert bool((moment != 0).all())
    masks = _random_masks(model)
    set_masks(model, masks)
    _assert_pruned_zero(model, masks)
    _train(model, opt, X, Y, 200)  # the stale moments would move pruned weights without re-masking
    _assert_pruned_zero(model, masks)


def test_without_masked_step_the_stale_moments_revive_weights():
    """The control for the test above: plain ``opt.step()`` does move pruned weights."""
    model = _model()
    X, Y = _data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    _train(model, opt, X, Y, 20)
    masks = _random_masks(model)
    set_masks(model, masks)
    opt.zero_grad()
    nn.functional.mse_loss(model(X), Y).backward()
    opt.step()
    assert bool((model.linear0.weight.detach()[~masks["linear0.weight"]] != 0).any())


def test_mask_grads_and_enforce_functions():
    model = _model()
    X, Y = _data()
    masks = _random_masks(model)
    set_masks(model, masks)
    nn.functional.mse_loss(model(X), Y).backward()
    mask_grads(model)
    for n, p in model.named_parameters():
        if n in masks:
            assert torch.equal(p.grad[~masks[n]], torch.zeros_like(p.grad[~masks[n]]))
            assert bool((p.grad[masks[n]] != 0).any())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    enforce(model)
    _assert_pruned_zero(model, masks)


def test_masks_only_shrink():
    model = _model()
    names = prunable_names(model)
    a = _random_masks(model, 0.4, seed=1)
    b = _random_masks(model, 0.4, seed=2)
    set_masks(model, a)
    set_masks(model, b)
    got = get_masks(model)
    for n in names:
        assert torch.equal(got[n], a[n] & b[n])
    # an all-True mask cannot revive anything
    set_masks(model, {n: torch.ones_like(a[n]) for n in names})
    for n in names:
        assert torch.equal(get_masks(model)[n], a[n] & b[n])
    _assert_pruned_zero(model, {n: a[n] & b[n] for n in names})


def test_get_masks_defaults_to_all_true_and_remove_masks():
    model = _model()
    for n, m in get_masks(model).items():
        assert m.dtype == torch.bool and bool(m.all())
    set_masks(model, _random_masks(model))
    remove_masks(model)
    assert mask_pairs(model) == []
    assert all(bool(m.all()) for m in get_masks(model).values())


def test_set_masks_rejects_bad_names_and_shapes():
    model = _model()
    with pytest.raises(sciprune.errors.SciPruneError, match="linear0.weight"):
        set_masks(model, {"nope.weight": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(sciprune.errors.SciPruneError, match="shape"):
        set_masks(model, {"linear0.weight": torch.ones(2, 2, dtype=torch.bool)})


def test_state_dict_keys_identical_to_dense():
    dense = _model()
    pruned = _model()
    sciprune.prune(pruned, "magnitude", 0.7)
    assert list(pruned.state_dict()) == list(dense.state_dict())
    assert [n for n, _ in pruned.named_parameters()] == [n for n, _ in dense.named_parameters()]


def test_no_hooks_and_leaf_parameters():
    model = _model()
    sciprune.prune(model, "magnitude", 0.7)
    for m in model.modules():
        assert len(m._forward_pre_hooks) == 0
        assert len(m._forward_hooks) == 0
        assert len(m._backward_hooks) == 0
    for n, p in model.named_parameters():
        assert isinstance(p, nn.Parameter) and p.is_leaf and p.grad_fn is None, n
    # the masked weight is the parameter itself, not a recomputed tensor
    assert model.linear0.weight is dict(model.named_parameters())["linear0.weight"]


def _assert_same_masked_model(a, b):
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    ma, mb = get_masks(a), get_masks(b)
    assert ma.keys() == mb.keys()
    for n in ma:
        assert torch.equal(ma[n], mb[n])
    assert len(mask_pairs(b)) == len(mask_pairs(a)) > 0


def test_deepcopy_keeps_masks_and_values():
    model = _model()
    sciprune.prune(model, "magnitude", 0.6)
    clone = copy.deepcopy(model)
    _assert_same_masked_model(model, clone)
    # the copy's masks are its own tensors and hold through its training
    assert clone.linear0.weight_mask.data_ptr() != model.linear0.weight_mask.data_ptr()
    X, Y = _data()
    _train(clone, torch.optim.Adam(clone.parameters(), lr=1e-2), X, Y, 20)
    _assert_pruned_zero(clone, get_masks(model))


def test_torch_save_full_model_round_trip():
    model = _model()
    sciprune.prune(model, "magnitude", 0.6)
    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    _assert_same_masked_model(model, loaded)
    X, _ = _data()
    assert torch.equal(model(X), loaded(X))


def test_state_dict_round_trip():
    model = _model()
    sciprune.prune(model, "magnitude", 0.6)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    assert not any(k.endswith("_mask") for k in sd)  # masks are non-persistent
    fresh = _model(seed=99)
    fresh.load_state_dict(sd)
    X, _ = _data()
    assert torch.equal(model(X), fresh(X))
    assert sparsity(fresh)["weights"] == sparsity(model)["weights"]
    # loading into a masked model keeps that model's masks
    target = _model(seed=99)
    set_masks(target, get_masks(model))
    target.load_state_dict(sd)
    _assert_same_masked_model(model, target)


def test_sparsity_per_layer_global_and_biases_from_live_tensors():
    model = _model(widths=(4,))  # 3-4-2: weights 12 + 8, biases 4 + 2
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
        model.linear0.weight[0, :] = 0.0  # 3 zeros, no mask
        model.linear1.weight[1, 1] = 0.0  # 1 zero
        model.linear0.bias[2] = 0.0
    s = sparsity(model)
    assert s["layers"]["linear0.weight"] == {"zeros": 3, "total": 12, "sparsity": 3 / 12}
    assert s["layers"]["linear1.weight"] == {"zeros": 1, "total": 8, "sparsity": 1 / 8}
    assert s["weights"] == {"zeros": 4, "total": 20, "sparsity": 4 / 20}
    assert s["biases"] == {"zeros": 1, "total": 6, "sparsity": 1 / 6}
    # masks add their zeros; live edits are seen at once
    m = torch.ones(2, 4, dtype=torch.bool)
    m[0, :] = False
    set_masks(model, {"linear1.weight": m})
    assert sparsity(model)["layers"]["linear1.weight"]["zeros"] == 5
    with torch.no_grad():
        model.linear1.bias.zero_()
    assert sparsity(model)["biases"]["zeros"] == 3


def test_prune_report_matches_live_sparsity():
    model = _model()
    rep = sciprune.prune(model, "magnitude", 0.55)
    s = sparsity(model)
    assert rep.pruned == s["weights"]["zeros"] and rep.total == s["weights"]["total"]
    assert rep.achieved == s["weights"]["sparsity"]
    assert rep.pruned == n_to_prune(0.55, rep.total)


# --------------------------------------------------------------------------- properties

widths_st = st.lists(st.integers(1, 9), min_size=1, max_size=3)
ratio_st = st.floats(0.0, 0.999, allow_nan=False)


@settings(max_examples=40, deadline=None)
@given(widths=widths_st, n_in=st.integers(1, 5), n_out=st.integers(1, 4), ratio=ratio_st,
       method=st.sampled_from(["magnitude", "random"]), seed=st.integers(0, 2**16))
def test_property_global_sparsity_exact(widths, n_in, n_out, ratio, method, seed):
    model = sciprune.MLP(n_in, widths, n_out, seed=seed).double()
    rep = sciprune.prune(model, method, ratio, seed=seed)
    s = sparsity(model)["weights"]
    # fresh random weights are never exactly zero, so live zeros == pruned weights
    assert s["zeros"] == math.floor(ratio * s["total"] + 0.5) == rep.pruned


@settings(max_examples=40, deadline=None)
@given(widths=widths_st, n_in=st.integers(1, 5), n_out=st.integers(1, 4), ratio=ratio_st,
       method=st.sampled_from(["magnitude", "random"]), seed=st.integers(0, 2**16))
def test_property_layer_sparsity_exact(widths, n_in, n_out, ratio, method, seed):
    model = sciprune.MLP(n_in, widths, n_out, seed=seed).double()
    sciprune.prune(model, method, ratio, scope="layer", seed=seed)
    for name, s in sparsity(model)["layers"].items():
        assert s["zeros"] == math.floor(ratio * s["total"] + 0.5), name


@settings(max_examples=15, deadline=None)
@given(widths=widths_st, ratio=st.floats(0.1, 0.95), seed=st.integers(0, 2**16),
       opt=st.sampled_from(["adam", "adamw", "sgd"]), scope=st.sampled_from(["global", "layer"]))
def test_property_masks_hold_through_fine_tuning(widths, ratio, seed, opt, scope):
    model = sciprune.MLP(3, widths, 2, seed=seed).double()
    X, Y = _data(32, seed=seed)
    sciprune.prune(model, "random", ratio, scope=scope, seed=seed)
    masks = get_masks(model)
    zeros = sparsity(model)["weights"]["zeros"]
    cfg = sciprune.TrainConfig(optimizer=opt, lr=0.05, epochs=5, batch_size=8, weight_decay=0.1, seed=seed)
    sciprune.fit(model, (X, Y), cfg)
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert bool((params[n].detach()[~m] == 0).all())
    assert sparsity(model)["weights"]["zeros"] >= zeros
