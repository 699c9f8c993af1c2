"""LOBSTER (sciprune.lobster): the update against a hand-written float64 reference, masks that hold,
the bisection threshold against the loss bound, the ensemble engine against per-member fits, bad input."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import sciprune
from sciprune.ensemble import fit_many
from sciprune.errors import SciPruneError
from sciprune.lobster import Lobster, ScaledLobster
from sciprune.lobster_threshold import Plateau, threshold_bisect
from sciprune.masks import get_masks
from sciprune.training import TrainConfig, evaluate_loss, fit

DT = torch.float64


# -- the update against a hand-written reference ---------------------------------------------------------
def _tiny(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)).to(DT)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT))
    return net


def _grads(P: dict, X: torch.Tensor, Y: torch.Tensor) -> dict:
    """dL/dtheta of L = mean (W2 tanh(W1 x + b1) + b2 - y)^2, by hand."""
    h = torch.tanh(X @ P["0.weight"].T + P["0.bias"])
    r = 2.0 * (h @ P["2.weight"].T + P["2.bias"] - Y) / X.shape[0]  # dL/dy
    dz = (r @ P["2.weight"]) * (1 - h * h)
    return {"0.weight": dz.T @ X, "0.bias": dz.sum(0), "2.weight": r.T @ h, "2.bias": r.sum(0)}


def _reference(P: dict, X, Y, *, opt: str, lr: float, lam: float, steps: int, wd: float = 0.0, biases: bool = True):
    """Full-batch SGD (momentum 0.9, L2 ``wd``) or Adam, each step followed by w -= lam w relu(1 - |g|)
    (on the biases too when ``biases``)."""
    P = {k: v.clone() for k, v in P.items()}
    buf, m, v = {}, {k: torch.zeros_like(p) for k, p in P.items()}, {k: torch.zeros_like(p) for k, p in P.items()}
    b1, b2, eps, seen = 0.9, 0.999, 1e-8, []
    for t in range(1, steps + 1):
        G = _grads(P, X, Y)
        seen.append(G)
        for k in P:
            if opt == "sgd":
                d = G[k] + wd * P[k]
                buf[k] = d if t == 1 else 0.9 * buf[k] + d
                P[k] = P[k] - lr * buf[k]
            else:
                m[k] = b1 * m[k] + (1 - b1) * G[k]
                v[k] = b2 * v[k] + (1 - b2) * G[k] ** 2
                P[k] = P[k] - lr * (m[k] / (1 - b1**t)) / (torch.sqrt(v[k] / (1 - b2**t)) + eps)
            if biases or k.endswith("weight"):
                P[k] = P[k] - lam * P[k] * torch.clamp(1 - G[k].abs(), min=0)
    return P, seen


@pytest.mark.parametrize("opt,wd", [("sgd", 0.0), ("sgd", 0.01), ("adam", 0.0)])
def test_update_equals_hand_written_reference(opt, wd):
    X = torch.linspace(-1, 1, 16, dtype=DT).reshape(8, 2) * 3
    Y = 4 * torch.sin(X[:, :1] * X[:, 1:])  # large targets: some |g| > 1, so the relu clips
    net = _tiny()
    P0 = {k: v.detach().clone() for k, v in net.named_parameters()}
    lam = 0.05
    expect, seen = _reference(P0, X, Y, opt=opt, lr=0.01, lam=lam, steps=5, wd=wd)
    g = torch.cat([G.flatten() for G in seen for G in G.values()]).abs()
    assert bool((g > 1).any()) and bool((g < 1).any())  # both branches of relu(1 - |g|) are exercised
    hook = Lobster(lam)
    fit(net, (X, Y), TrainConfig(optimizer=opt, lr=0.01, epochs=5, momentum=0.9, weight_decay=wd), hooks=[hook])
    for k, p in net.named_parameters():
        assert torch.allclose(p.detach(), expect[k], rtol=1e-12, atol=1e-14), k
    plain, _ = _reference(P0, X, Y, opt=opt, lr=0.01, lam=0.0, steps=5, wd=wd)
    assert not torch.allclose(plain["0.weight"], expect["0.weight"], rtol=1e-6)  # the hook did something


def test_biases_false_leaves_biases_to_the_optimiser():
    X = torch.linspace(-1, 1, 16, dtype=DT).reshape(8, 2)
    Y = torch.sin(X[:, :1])
    net = _tiny()
    P0 = {k: v.detach().clone() for k, v in net.named_parameters()}
    fit(net, (X, Y), TrainConfig(optimizer="sgd", lr=0.01, epochs=3, momentum=0.9), hooks=[Lobster(0.05, biases=False)])
    full, _ = _reference(P0, X, Y, opt="sgd", lr=0.01, lam=0.05, steps=3)
    expect, _ = _reference(P0, X, Y, opt="sgd", lr=0.01, lam=0.05, steps=3, biases=False)
    for k, p in net.named_parameters():
        assert torch.allclose(p.detach(), expect[k], rtol=1e-12, atol=1e-14), k
    assert not torch.allclose(expect["0.bias"], full["0.bias"], rtol=1e-9)


# -- zeros become masks and stay zero ---------------------------------------------------------------------
class HeldChecker:
    """After every step: every masked entry is exactly zero, and no mask ever grows back."""

    def __init__(self):
        self.masks, self.steps = None, 0

    def after_step(self, state):
        model = state.model
        now = {n: m.clone() for n, m in get_masks(model, names=[n for n, _ in model.named_parameters()]).items()}
        params = dict(model.named_parameters())
        for n, m in now.items():
            assert bool((params[n][~m] == 0).all()), n
            if self.masks is not None:
                assert not bool((m & ~self.masks[n]).any()), f"{n}: a pruned entry came back"
        self.masks, self.steps = now, self.steps + 1


@pytest.mark.parametrize("opt,wd", [("adam", 0.0), ("adamw", 1e-2), ("sgd", 0.0)])
def test_zeros_are_masked_and_stay_zero(opt, wd):
    g = torch.Generator().manual_seed(1)
    X = torch.rand(64, 3, generator=g, dtype=DT) * 2 - 1
    Y = torch.sin(2 * X[:, :1]) + X[:, 1:2] * X[:, 2:]
    dead = X.clone()
    dead[:, 2] = 0.0  # the weights from input 2 get g = 0 exactly, so lam = 1 zeroes them at step 1
    model = sciprune.MLP(3, [8, 8], 1, "tanh", seed=3).to(DT)
    first = Lobster(1.0)
    fit(model, (dead, Y), TrainConfig(optimizer=opt, lr=1e-2, epochs=1, weight_decay=wd), hooks=[first])
    mask = get_masks(model)["linear0.weight"]
    assert first.zeroed == 8 and bool((~mask[:, 2]).all()) and bool(mask[:, :2].all())
    # the column now has gradients; thresholding at every epoch (pwe 0) adds masks while training
    checker = HeldChecker()
    hook = Lobster(1e-3, val=(X, Y), twt=0.1, pwe=0)
    fit(model, (X, Y), TrainConfig(optimizer=opt, lr=1e-2, epochs=30, batch_size=16, weight_decay=wd,
                                   momentum=0.9), val=(X, Y), hooks=[hook, checker])
    assert checker.steps == 120 and sum(e.pruned for e in hook.events) > 0
    assert bool((model.linear0.weight[:, 2] == 0).all())


def test_small_lam_never_makes_an_exact_zero():
    """For lam < 1/2, w - lam w r keeps at least |w|/2 (r in [0, 1]): no zero, even for subnormal weights."""
    w = torch.tensor([5e-324, 1e-323, -5e-324, 1e-300, 1.0], dtype=DT)
    for lam in (0.49, 0.25, 1e-4):
        for r in (0.0, 0.5, 1.0):
            out = w.clone().add_(w * torch.full_like(w, r), alpha=-lam)
            assert bool((out != 0).all()), (lam, r)


# -- bisection ---------------------------------------------------------------------------------------------
def _linear_case(weights, noise: float = 1e-2, n: int = 64):
    """y = X w + noise with orthonormal columns scaled to mean square 1: pruning w_j adds exactly w_j^2
    (minus the noise's cross term) to the MSE, so the loss increases with every pruned weight."""
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(n, len(weights), generator=g, dtype=DT))
    X = Q * math.sqrt(n)
    w = torch.tensor(weights, dtype=DT)
    Y = (X @ w)[:, None] + noise * torch.randn(n, 1, generator=g, dtype=DT)
    model = nn.Linear(len(weights), 1, bias=False).to(DT)
    with torch.no_grad():
        model.weight.copy_(w[None])
    return model, (X, Y)


def _loss_at(model, data, T):
    with torch.no_grad():
        saved = model.weight.clone()
        model.weight.masked_fill_(model.weight.abs() < T, 0.0)
        value = evaluate_loss(model, *data, "mse")
        model.weight.copy_(saved)
    return value


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_bisection_threshold_meets_the_bound_and_one_percent_more_breaks_it(k):
    weights = [0.3, -1.0, 0.01, 0.5]
    model, data = _linear_case(weights)
    order = sorted(abs(w) for w in weights)
    L = [_loss_at(model, data, 0.0)] + [_loss_at(model, data, t * (1 + 1e-12)) for t in order]
    assert all(a < b for a, b in zip(L, L[1:]))  # the construction: each pruned weight raises the loss
    bound = (L[k] + L[k + 1]) / 2  # the k smallest may go, the (k+1)-th may not: largest T is order[k]
    before = model.weight.detach().clone()
    found = threshold_bisect(model, lambda m: evaluate_loss(m, *data, "mse"), bound)
    assert torch.equal(model.weight, before)  # the model is left as it was
    T = found.threshold
    assert _loss_at(model, data, T) <= bound and found.loss <= bound
    assert _loss_at(model, data, 1.01 * T) > bound
    assert order[k] / 1.01 < T <= order[k]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(0.01, 2.0), min_size=2, max_size=6), st.floats(0.0, 0.5), st.integers(0, 2))
def test_bisection_threshold_never_breaks_the_bound(mags, twt, sign_seed):
    g = torch.Generator().manual_seed(sign_seed)
    signs = torch.randint(0, 2, (len(mags),), generator=g) * 2 - 1
    model, data = _linear_case([m * s for m, s in zip(mags, signs.tolist())], noise=0.3)
    base = evaluate_loss(model, *data, "mse")
    found = threshold_bisect(model, lambda m: evaluate_loss(m, *data, "mse"), (1 + twt) * base)
    assert found.threshold == 0.0 or min(mags) <= found.threshold * (1 + 1e-12)
    assert _loss_at(model, data, found.threshold) <= (1 + twt) * base
    assert all(L <= (1 + twt) * base for T, L in found.trials if T == found.threshold)


def test_bisection_with_biases_below_the_smallest_weight():
    """A bias below min |w| is pruned at T_min: tested, and T = 0 when that breaks the bound."""
    model = nn.Linear(2, 1).to(DT)
    X = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=DT)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 0.8]], dtype=DT))
        model.bias.fill_(0.1)
    Y = model(X).detach()
    found = threshold_bisect(model, lambda m: evaluate_loss(m, X, Y, "mse"), 1e-6)
    assert found.threshold == 0.0 and found.trials[-1][1] > 1e-6


def test_plateau_follows_the_authors_rule():
    model = nn.Linear(1, 1)
    p = Plateau(2)
    assert [p.step(v, model) for v in (1.0, 0.995, 1.004, 1.02)] == [False, False, False, False]
    assert p.step(1.1, model) is True  # second evaluation >= 1.01 * best (0.995)
    zero = Plateau(0)
    assert zero.step(5.0, model) and zero.step(7.0, model)  # pwe 0: every evaluation


# -- the ensemble engine -------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Lobster, ScaledLobster])
def test_ensemble_equals_per_member_fit(cls):
    M = 3
    g = torch.Generator().manual_seed(5)
    X = torch.rand(48, 2, generator=g, dtype=DT) * 2 - 1
    Xv = torch.rand(32, 2, generator=g, dtype=DT) * 2 - 1
    datas = [(X, torch.sin(3 * X[:, :1]) * X[:, 1:] + 0.05 * torch.randn(48, 1, generator=g, dtype=DT)) for _ in range(M)]
    vals = [(Xv, torch.sin(3 * Xv[:, :1]) * Xv[:, 1:] + 0.05 * torch.randn(32, 1, generator=g, dtype=DT)) for _ in range(M)]
    cfgs = [TrainConfig(lr=1e-2, epochs=6, batch_size=16, seed=s) for s in range(M)]
    alone = [sciprune.MLP(2, [6, 6], 1, "tanh", seed=40 + m).to(DT) for m in range(M)]
    together = [sciprune.MLP(2, [6, 6], 1, "tanh", seed=40 + m).to(DT) for m in range(M)]
    opts = dict(twt=0.05, pwe=0)
    lam = 1e-3 if cls is Lobster else 5e-2
    hooks = []
    for m in range(M):
        hooks.append(cls(lam, val=vals[m], **opts))
        fit(alone[m], datas[m], cfgs[m], val=vals[m], hooks=[hooks[-1]])
    shared = cls(lam, val=vals, **opts)
    fit_many(together, datas, cfgs, val=vals, hooks=[shared])
    masks = []
    for m in range(M):
        for (n, a), (_, b) in zip(alone[m].named_parameters(), together[m].named_parameters()):
            assert torch.allclose(a, b, rtol=0, atol=1e-10), (m, n)
        ma, mb = get_masks(alone[m]), get_masks(together[m])
        assert all(torch.equal(ma[n], mb[n]) for n in ma)
        masks.append(torch.cat([v.flatten() for v in ma.values()]))
        mine = [e for e in shared.events if e.member == m]
        assert [e.pruned for e in mine] == [e.pruned for e in hooks[m].events] and len(mine) == 6
        assert all(math.isclose(a.threshold, b.threshold, rel_tol=1e-9) for a, b in zip(mine, hooks[m].events))
    assert not torch.equal(masks[0], masks[1]) and not torch.equal(masks[1], masks[2])  # own trajectories
    assert all(not bool(m.all()) for m in masks)


# -- the regression pitfall -----------------------------------------------------------------------------------
class Snap:
    """Weights and gradients of the Linear weights, taken where it sits in the hook list."""

    def __init__(self):
        self.w, self.g = [], []

    def after_step(self, state):
        ps = [p for n, p in state.model.named_parameters() if n.endswith("weight")]
        self.w.append(torch.cat([p.detach().flatten() for p in ps]))
        self.g.append(torch.cat([p.grad.flatten() for p in ps]))


def _regression_with(hook, epochs: int):
    """A small regression trained to MSE < 1e-3 (7.7e-4), then ``epochs`` full-batch steps with ``hook`` between
    two :class:`Snap` recorders: (history, before, after)."""
    g = torch.Generator().manual_seed(0)
    X = torch.rand(256, 2, generator=g, dtype=DT) * 2 - 1
    Y = 0.3 * torch.sin(2 * X[:, :1]) + 0.2 * X[:, 1:]
    model = sciprune.MLP(2, [8], 1, "tanh", seed=0).to(DT)
    fit(model, (X, Y), TrainConfig(lr=1e-2, epochs=300))
    before, after = Snap(), Snap()
    hist = fit(model, (X, Y), TrainConfig(lr=1e-3, epochs=epochs), hooks=[before, hook, after])
    return hist, before, after


def test_on_regression_lobster_is_plain_weight_decay():
    """MSE below 1e-3: every |g| << 1 (max 2e-3), so the update lam w relu(1 - |g|) is lam w to within max |g|."""
    lam = 1e-4
    hist, before, after = _regression_with(Lobster(lam), 20)
    assert hist.train_loss[-1] < 1e-3
    for w0, gr, w1 in zip(before.w, before.g, after.w):
        step = w0 - w1
        tol = 4 * torch.finfo(DT).eps * float(w0.abs().max())  # w0 - w1 cancels: rounding of w, not of the step
        assert torch.allclose(step, lam * w0 * (1 - gr.abs()), rtol=0, atol=tol)  # the formula
        assert float(gr.abs().max()) < 1e-2
        assert torch.allclose(step, lam * w0, rtol=float(gr.abs().max()), atol=tol)  # plain decay lam w within max |g|


def test_scaled_variant_is_not_plain_decay_on_regression():
    lam = 1e-2
    _, before, after = _regression_with(ScaledLobster(lam), 5)
    factor = (before.w[-1] - after.w[-1]) / (lam * before.w[-1])  # relu(1 - |g| / s) per weight
    assert float(factor.min()) == 0.0 and float(factor.max()) > 0.5  # sensitive weights spared, others decay
    assert ScaledLobster.name == "lobster-scaled" and Lobster.name == "lobster"


# -- bad input --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    {"lam": 0.0}, {"lam": -1e-4}, {"lam": float("nan")}, {"lam": float("inf")}, {"lam": 1.5}, {"lam": True},
    {"lam": "1e-4"}, {"twt": -0.1}, {"twt": float("nan")}, {"pwe": -1}, {"pwe": 1.5}, {"delta": 0.0},
    {"biases": "yes"}, {"loss": "l1"}, {"val": [1, 2]}, {"val": (torch.zeros(3, 2), torch.zeros(4, 1))},
])
@pytest.mark.parametrize("cls", [Lobster, ScaledLobster])
def test_bad_input_is_one_line_at_construction(cls, kwargs):
    with pytest.raises(SciPruneError) as err:
        cls(**kwargs)
    assert "\n" not in str(err.value)
    key = next(iter(kwargs))
    assert key in str(err.value) or (key == "val" and "val" in str(err.value))


@pytest.mark.parametrize("beta", [1.0, -0.1, float("nan")])
def test_scaled_bad_beta(beta):
    with pytest.raises(SciPruneError, match="beta"):
        ScaledLobster(beta=beta)
