"""Ensemble engine: M members trained at once equal M runs of ``sciprune.fit`` (float64, CPU)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sciprune
from sciprune.ensemble import (
    evaluate_ensemble,
    fit_ensemble,
    fit_many,
    group_by_architecture,
    member_bytes,
    members_per_batch,
    stack_masks,
    stack_models,
    unstack,
)
from sciprune.errors import SciPruneError
from sciprune.masks import get_masks
from sciprune.training import TrainConfig, evaluate_loss, fit

DT = torch.float64
TOL = 1e-10


def _regression_members(M: int, *, n: int = 96, own_x: bool = False, seed: int = 0):
    """Shared X (or one X per member), per-member noisy targets; clean validation set."""
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=DT) * 2 - 1
    datas = []
    for _ in range(M):
        Xm = torch.rand(n, 2, generator=g, dtype=DT) * 2 - 1 if own_x else X
        Ym = torch.sin(3 * Xm[:, :1]) * torch.exp(-Xm[:, 1:]) + 0.05 * torch.randn(n, 1, generator=g, dtype=DT)
        datas.append((Xm, Ym))
    Xv = torch.rand(40, 2, generator=g, dtype=DT) * 2 - 1
    return datas, (Xv, torch.sin(3 * Xv[:, :1]) * torch.exp(-Xv[:, 1:]))


def _classification_members(M: int, *, n: int = 90, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    W = torch.tensor([[2.0, -1.0, 0.5], [-1.0, 2.0, 0.0], [0.0, 0.5, -2.0]], dtype=DT)
    datas = []
    for _ in range(M):  # own inputs and labels per member (a different split of one task)
        X = torch.randn(n, 3, generator=g, dtype=DT)
        datas.append((X, (X @ W.T + 0.3 * torch.randn(n, 3, generator=g, dtype=DT)).argmax(dim=1)))
    Xv = torch.randn(30, 3, generator=g, dtype=DT)
    return datas, (Xv, (Xv @ W.T).argmax(dim=1))


def _members(M: int, sizes=(2, 12, 12, 1), act="tanh"):
    """M models with their own initial weights and masks (dense, magnitude, random, ...)."""
    out = []
    for m in range(M):
        model = sciprune.MLP(sizes[0], list(sizes[1:-1]), sizes[-1], act, seed=100 + m).to(DT)
        if m % 3 == 1:
            sciprune.prune(model, "magnitude", 0.5)
        elif m % 3 == 2:
            sciprune.prune(model, "random", 0.3, seed=m)
        out.append(model)
    return out


def _assert_same(models, refs, hists, ref_hists):
    for i, (a, b) in enumerate(zip(models, refs)):
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            err = float((p - q).detach().abs().max())
            assert err < TOL, f"member {i} {name}: max |ensemble - fit| = {err:.3g}"
    for i, (h, r) in enumerate(zip(hists, ref_hists)):
        assert h.epoch == r.epoch, i
        assert h.best_epoch == r.best_epoch, i
        for key in ("train_loss", "val_loss"):
            a, b = getattr(h, key), getattr(r, key)
            assert len(a) == len(b), (i, key)
            for e, (x, y) in enumerate(zip(a, b)):
                assert (math.isnan(x) and math.isnan(y)) or abs(x - y) < TOL, f"member {i} {key}[{e}]: {x} vs {y}"


def _run_both(models, datas, cfgs, *, val=None, loss=None, **kw):
    refs = [copy.deepcopy(m) for m in models]
    vals = val if isinstance(val, list) else [val] * len(models)
    ref_hists = [fit(r, d, c, loss=loss, val=v) for r, d, c, v in zip(refs, datas, cfgs, vals)]
    hists = fit_ensemble(models, datas, cfgs, loss=loss, val=val, **kw)
    return refs, hists, ref_hists


CASES = {
    "adam-cosine-minibatch": dict(optimizer="adam", lr=1e-2, lr_schedule="cosine", batch_size=20),
    "adam-constant-fullbatch": dict(optimizer="adam", lr=1e-2),
    "adamw-wd-minibatch": dict(optimizer="adamw", lr=1e-2, weight_decay=0.05, batch_size=32),
    "adam-l2-step": dict(optimizer="adam", lr=1e-2, weight_decay=1e-3, batch_size=40, lr_schedule="step", step_size=2),
    "sgd-momentum-minibatch": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-3, batch_size=25),
    "sgd-momentum-fullbatch-cosine": dict(optimizer="sgd", lr=0.1, momentum=0.8, lr_schedule="cosine"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_regression_equals_fit(case):
    M = 4
    datas, val = _regression_members(M)
    models = _members(M)
    cfgs = [TrainConfig(epochs=6, seed=7 + m, **CASES[case]) for m in range(M)]
    refs, hists, ref_hists = _run_both(models, datas, cfgs, val=val)
    _assert_same(models, refs, hists, ref_hists)


@pytest.mark.parametrize("case", ["adam-cosine-minibatch", "sgd-momentum-fullbatch-cosine", "adamw-wd-minibatch"])
def test_classification_equals_fit(case):
    M = 3
    datas, val = _classification_members(M)
    models = _members(M, sizes=(3, 10, 3), act="relu")
    cfgs = [TrainConfig(epochs=5, seed=m, **CASES[case]) for m in range(M)]
    refs, hists, ref_hists = _run_both(models, datas, cfgs, val=val)
    _assert_same(models, refs, hists, ref_hists)


@pytest.mark.parametrize("forward", ["bmm", "vmap"])
def test_own_inputs_per_member_eval_every_and_forward_modes(forward):
    M = 3
    datas, _ = _regression_members(M, own_x=True, seed=3)
    vals = [(d[0][:30], d[1][:30]) for d in datas]  # a validation set per member
    models = _members(M, act="sin")
    cfgs = [TrainConfig(optimizer="adam", lr=5e-3, epochs=5, batch_size=16, eval_every=2, seed=m) for m in range(M)]
    refs, hists, ref_hists = _run_both(models, datas, cfgs, val=vals, forward=forward)
    assert hists[0].epoch == [2, 4, 5]
    _assert_same(models, refs, hists, ref_hists)


def test_prefetched_permutations_and_taskdata():
    from sciprune.data._types import TaskData

    M = 3
    datas, (Xv, Yv) = _regression_members(M, seed=5)
    tasks = [TaskData("regression", X, Y, Xv, Yv, Xv, Yv) for X, Y in datas]
    models = _members(M)
    cfgs = [TrainConfig(optimizer="adam", lr=1e-2, epochs=4, batch_size=30, seed=m) for m in range(M)]
    refs = [copy.deepcopy(m) for m in models]
    ref_hists = [fit(r, t, c) for r, t, c in zip(refs, tasks, cfgs)]
    hists = fit_ensemble(models, tasks, cfgs, prefetch=True)
    assert not math.isnan(hists[0].val_loss[-1])  # the TaskData brought its validation split
    _assert_same(models, refs, hists, ref_hists)


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_optimizer_on_stacked_tensors_is_per_member(name):
    """The premise of the engine: torch.optim on (M, ...) stacks = M separate optimisers (same steps)."""
    from sciprune.training import _make_optimizer

    cfg = TrainConfig(optimizer=name, lr=0.1, weight_decay=0.01, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    stack = torch.randn(3, 5, 7, generator=g, dtype=DT, requires_grad=True)
    singles = [stack[m].detach().clone().requires_grad_(True) for m in range(3)]
    opt, opts = _make_optimizer([stack], cfg), [_make_optimizer([p], cfg) for p in singles]
    for _ in range(4):
        grads = torch.randn(3, 5, 7, generator=g, dtype=DT)
        stack.grad = grads.clone()
        opt.step()
        for m, (p, o) in enumerate(zip(singles, opts)):
            p.grad = grads[m].clone()
            o.step()
    for m in range(3):
        torch.testing.assert_close(stack[m], singles[m], rtol=0, atol=1e-15)


@pytest.mark.parametrize("n", [7, 1000, 70_000])
def test_int32_permutations_into_rows_equal_fits_draws(n):
    """The engine draws int32 permutations into rows of one buffer; fit draws int64 ones."""
    buf = torch.empty((2, n), dtype=torch.int32)
    for row, seed in zip(buf, (3, 4)):
        torch.randperm(n, generator=torch.Generator().manual_seed(seed), out=row)
        assert torch.equal(row.long(), torch.randperm(n, generator=torch.Generator().manual_seed(seed)))


def test_parameters_updated_in_place_and_progress():
    datas, _ = _regression_members(2)
    models = _members(2)
    ids = [[id(p) for p in m.parameters()] for m in models]
    before = [copy.deepcopy(m) for m in models]
    calls = []
    fit_ensemble(models, datas, TrainConfig(epochs=3, lr=1e-2, batch_size=32),
                 progress=lambda e, E, tr, vl: calls.append((e, E, len(tr), len(vl))))
    assert [[id(p) for p in m.parameters()] for m in models] == ids
    assert all(not torch.equal(a.linear0.weight, b.linear0.weight) for a, b in zip(models, before))
    assert calls == [(1, 3, 2, 2), (2, 3, 2, 2), (3, 3, 2, 2)]


@settings(max_examples=8, deadline=None)
@given(ratios=st.lists(st.floats(0.0, 0.9), min_size=2, max_size=4),
       optimizer=st.sampled_from(["adam", "adamw", "sgd"]))
def test_masks_hold_and_sparsity_is_exact(ratios, optimizer):
    M = len(ratios)
    datas, _ = _regression_members(M, n=48)
    models = []
    for m, r in enumerate(ratios):
        model = sciprune.MLP(2, [8, 8], 1, seed=m).to(DT)
        sciprune.prune(model, "random", r, seed=m)
        models.append(model)
    masks = [get_masks(m) for m in models]
    sp = [sciprune.sparsity(m)["weights"]["sparsity"] for m in models]
    fit_ensemble(models, datas, TrainConfig(optimizer=optimizer, lr=0.05, weight_decay=0.1, epochs=3, batch_size=16))
    for model, mask, s in zip(models, masks, sp):
        for name, keep in mask.items():
            w = model.get_parameter(name)
            assert torch.all(w[~keep] == 0), name
            assert torch.all(w[keep] != 0), name  # no kept weight became an exact zero by accident
        assert sciprune.sparsity(model)["weights"]["sparsity"] == s


def test_stack_unstack_and_evaluate_ensemble():
    models = _members(3)
    params = stack_models(models)
    assert params["linear0.weight"].shape == (3, 12, 2)
    masks = stack_masks(models)
    assert set(masks) == {"linear0.weight", "linear1.weight", "linear2.weight"}
    assert masks["linear0.weight"][0].all()  # member 0 is dense
    copies = _members(3)
    for c in copies:
        with torch.no_grad():
            for p in c.parameters():
                p.zero_()
    unstack(params, copies)
    for a, b in zip(models, copies):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
    datas, _ = _regression_members(3, own_x=True)
    got = evaluate_ensemble(models, datas, batch_size=17)
    want = [evaluate_loss(m, X, Y, "mse") for m, (X, Y) in zip(models, datas)]
    assert got == pytest.approx(want, rel=1e-12)


def test_fit_many_groups_and_falls_back():
    datas, val = _regression_members(5, seed=11)
    models = [*_members(2), *_members(2, sizes=(2, 6, 1)), sciprune.MLP(2, [5], 1, seed=9).to(DT)]
    cfgs = [TrainConfig(lr=1e-2, epochs=3, batch_size=32, seed=m) for m in range(4)]
    cfgs.append(TrainConfig(optimizer="lbfgs", lr=0.5, epochs=2))
    refs = [copy.deepcopy(m) for m in models]
    ref_hists = [fit(r, d, c, val=val) for r, d, c in zip(refs, datas, cfgs)]
    hists = fit_many(models, datas, cfgs, val=val, max_members=1 + 1)
    _assert_same(models, refs, hists, ref_hists)


def test_group_by_architecture():
    a, b = sciprune.MLP(2, [8], 1, seed=0), sciprune.MLP(2, [8], 1, seed=1)
    c = sciprune.MLP(2, [8, 8], 1)
    d = sciprune.MLP(2, [8], 1, "relu")
    e = sciprune.MLP(2, [8], 1).to(DT)
    sciprune.prune(b, "magnitude", 0.5)  # masks do not change the architecture
    assert group_by_architecture([a, c, b, d, e, c]) == [[0, 2], [1, 5], [3], [4]]


def test_members_per_batch():
    model = sciprune.MLP(2, [64] * 4, 1)
    k = members_per_batch(model, 20_000, 1024, "cpu", torch.float32)
    assert isinstance(k, int) and k >= 1
    assert members_per_batch(model, 20_000, 1024, "cpu", fraction=1e-12) == 1
    assert member_bytes(model, 40_000, 1024) > member_bytes(model, 20_000, 1024)
    assert member_bytes(model, 100, None, dtype=DT) > member_bytes(model, 100, None, dtype=torch.float32)
    with pytest.raises(SciPruneError, match="L-BFGS"):
        members_per_batch(model, 100, 10, optimizer="lbfgs")


# --------------------------------------------------------------------------- errors


def test_error_mixed_architectures():
    datas, _ = _regression_members(2)
    models = [sciprune.MLP(2, [8], 1).to(DT), sciprune.MLP(2, [9], 1).to(DT)]
    with pytest.raises(SciPruneError, match="one architecture.*group_by_architecture"):
        fit_ensemble(models, datas, TrainConfig(epochs=1))


def test_error_unsupported_training():
    datas, val = _regression_members(2)
    models = _members(2)
    with pytest.raises(SciPruneError, match="optimizer 'lbfgs'.*sciprune.fit"):
        fit_ensemble(models, datas, TrainConfig(optimizer="lbfgs", epochs=1))
    with pytest.raises(SciPruneError, match="early stopping.*sciprune.fit"):
        fit_ensemble(models, datas, TrainConfig(epochs=1, patience=3), val=val)
    with pytest.raises(SciPruneError, match="lr_schedule 'plateau'.*sciprune.fit"):
        fit_ensemble(models, datas, TrainConfig(epochs=1, lr_schedule="plateau"), val=val)


def test_error_mismatched_inputs():
    datas, val = _regression_members(3)
    models = _members(2)
    with pytest.raises(SciPruneError, match="got 3 entries for 2 members"):
        fit_ensemble(models, datas, TrainConfig(epochs=1))
    with pytest.raises(SciPruneError, match="configs.*got 1 entries for 2 members"):
        fit_ensemble(models, datas[:2], [TrainConfig(epochs=1)])
    with pytest.raises(SciPruneError, match=r"differs from member 0 in \['lr'\]"):
        fit_ensemble(models, datas[:2], [TrainConfig(epochs=1), TrainConfig(epochs=1, lr=0.1)])
    with pytest.raises(SciPruneError, match="same number of rows|one shape"):
        fit_ensemble(models, [datas[0], (datas[1][0][:50], datas[1][1][:50])], TrainConfig(epochs=1))
    with pytest.raises(SciPruneError, match="every member or for none"):
        fit_ensemble(models, datas[:2], TrainConfig(epochs=1), val=[val, None])


def test_vmap_path_for_a_model_that_is_not_a_plain_chain():
    datas, val = _regression_members(3, seed=2)
    models = []
    for m in range(3):
        torch.manual_seed(m)
        model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.LayerNorm(8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        models.append(model.to(DT))
    sciprune.prune(models[1], "magnitude", 0.4)
    cfgs = [TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.01, epochs=3, batch_size=32, seed=m) for m in range(3)]
    refs, hists, ref_hists = _run_both(models, datas, cfgs, val=val)
    _assert_same(models, refs, hists, ref_hists)
    with pytest.raises(SciPruneError, match="forward='vmap'"):
        fit_ensemble(models, datas, cfgs, forward="bmm")


def test_error_target_shape():
    datas, _ = _regression_members(2)
    with pytest.raises(SciPruneError, match="targets shaped like the outputs"):
        fit_ensemble(_members(2), [(X, Y[:, 0]) for X, Y in datas], TrainConfig(epochs=1))


def test_error_divergence_names_members():
    datas, _ = _regression_members(2)
    models = _members(2)
    with pytest.raises(SciPruneError, match=r"diverged at epoch \d+ for member\(s\)"):
        fit_ensemble(models, datas, TrainConfig(optimizer="sgd", lr=1e12, epochs=20))
