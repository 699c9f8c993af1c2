"""HGNP's flatness penalty and neuron score (sciprune.flatness, criteria/hgnp.py) against dense references.

References, float64 on small networks: ``v^T H v`` with H the dense Hessian of the batch loss over layer
l*'s ``[W b]`` (torch.func.hessian of a functional call: another path than the double backward used),
its gradient by central finite differences of that dense value, one SGD step on F against
theta - lr grad F, and the gate derivative of F through torch.func on a network with explicit gates.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian

import sciprune
from helpers import assert_close
from malformed import assert_raises_user_error
from sciprune.flatness import FlatnessPenalty, curvature_along, top_direction
from sciprune.neurons import hidden_layers

F64 = torch.float64


def _loss(y, Y):
    return F.mse_loss(y, Y) if Y.is_floating_point() else F.cross_entropy(y, Y)


def _setup(act: str, classes: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    model = sciprune.MLP(3, [5, 4], 3, act, seed=seed).double()
    X = torch.randn(30, 3, generator=g, dtype=F64)
    Y = torch.randint(0, 3, (30,), generator=g) if classes else torch.randn(30, 3, generator=g, dtype=F64)
    return model, X, Y


def _dense_q(model, d, X, Y, params=None, gates=None):
    """v^T H v with H the dense Hessian over layer l*'s weight and bias (torch.func)."""
    params = dict(model.named_parameters()) if params is None else params
    names = [f"{d.layer}.weight", f"{d.layer}.bias"]
    v = torch.cat([d.weight.reshape(-1), d.bias.reshape(-1)])
    shapes = [params[n].shape for n in names]

    def loss_of(flat):
        w = flat[: shapes[0].numel()].reshape(shapes[0])
        b = flat[shapes[0].numel():].reshape(shapes[1])
        p = {**params, names[0]: w, names[1]: b}
        if gates is None:
            return _loss(functional_call(model, p, (X,)), Y)
        return _loss(_gated_call(model, p, X, gates), Y)

    flat = torch.cat([params[n].reshape(-1) for n in names])
    return v @ hessian(loss_of)(flat) @ v


def _gated_call(model, params, X, gates):
    """The network with hidden activations multiplied by ``gates`` (a list, one per hidden layer)."""
    x, k = X, -1
    for name, m in model.named_children():
        if isinstance(m, torch.nn.Linear):
            if k >= 0:
                x = x * gates[k]
            k += 1
            x = F.linear(x, params[f"{name}.weight"], params[f"{name}.bias"])
        else:
            x = m(x)
    return x


@pytest.mark.parametrize("act,classes", [("tanh", False), ("relu", True), ("tanh", True)])
def test_curvature_along_is_the_dense_quadratic_form(act, classes):
    model, X, Y = _setup(act, classes)
    d = top_direction(model, X, Y, loss="cross_entropy" if classes else "mse")
    _, q = curvature_along(model, d, X, Y, loss="cross_entropy" if classes else "mse")
    assert_close(float(q.detach()), float(_dense_q(model, d, X, Y).detach()), rtol=1e-10)
    assert_close(float(torch.cat([d.weight.reshape(-1), d.bias]).norm()), 1.0, rtol=1e-12)


def test_k_fac_is_exact_for_a_single_output_linear_layer():
    """One Linear layer, one output, MSE: G is a constant, so K-FAC is the Hessian and v^T H v = rho."""
    g = torch.Generator().manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(4, 1)).double()
    X, Y = torch.randn(50, 4, generator=g, dtype=F64), torch.randn(50, 1, generator=g, dtype=F64)
    d = top_direction(model, X, Y, loss="mse")
    _, q = curvature_along(model, d, X, Y, loss="mse")
    q = q.detach()
    H = hessian(lambda w: F.mse_loss(X @ w[:4] + w[4], Y[:, 0]))(torch.zeros(5, dtype=F64))
    assert_close(d.rho, float(torch.linalg.eigvalsh(H)[-1]), rtol=1e-10)
    assert_close(float(q), d.rho, rtol=1e-10)


def test_gradient_of_the_penalty_matches_finite_differences():
    model, X, Y = _setup("tanh", False)
    d = top_direction(model, X, Y, loss="mse")
    _, q = curvature_along(model, d, X, Y, loss="mse")
    params = list(model.parameters())
    got = [torch.zeros_like(p) if g is None else g  # the output layer's curvature under MSE does not depend on it
           for p, g in zip(params, torch.autograd.grad(q, params, allow_unused=True))]
    base = {n: p.detach().clone() for n, p in model.named_parameters()}
    h = 1e-5
    for (name, p0), gp in zip(base.items(), got):
        for idx in [(0,) * p0.dim(), tuple(s - 1 for s in p0.shape)]:
            plus, minus = dict(base), dict(base)
            plus[name] = p0.clone(); plus[name][idx] += h
            minus[name] = p0.clone(); minus[name][idx] -= h
            fd = (_dense_q(model, d, X, Y, plus) - _dense_q(model, d, X, Y, minus)) / (2 * h)
            assert abs(float(gp[idx]) - float(fd)) <= 1e-6 * (1 + abs(float(fd))), (name, idx, float(gp[idx]), float(fd))


@pytest.mark.parametrize("K_above", [False, True])
def test_one_sgd_step_on_F(K_above):
    """fit with the hook takes theta - lr (grad L + mu grad max(0, q - K)) with v of that batch; with K
    above q the step is plain SGD on L."""
    model, X, Y = _setup("tanh", False)
    mu, lr = 0.3, 0.05
    d = top_direction(model, X, Y, loss="mse")
    L, q = curvature_along(model, d, X, Y, loss="mse")
    K = float(q) + 1.0 if K_above else float(q) / 2
    F_ = L + mu * torch.clamp(q - K, min=0)
    expected = [p.detach() - lr * g for p, g in zip(model.parameters(), torch.autograd.grad(F_, list(model.parameters())))]
    hook = FlatnessPenalty(mu=mu, K=K)
    sciprune.fit(model, (X, Y), sciprune.TrainConfig(optimizer="sgd", momentum=0.0, lr=lr, epochs=1), hooks=[hook])
    for p, e in zip(model.parameters(), expected):
        assert_close(p.detach(), e, rtol=1e-10)
    assert hook.active == (0 if K_above else 1) and hook.steps == 1 and len(hook.rho) == 1


def test_refresh_counts_and_mu_zero_is_plain_training():
    model, X, Y = _setup("relu", True)
    plain = sciprune.MLP(3, [5, 4], 3, "relu", seed=0).double()
    cfg = sciprune.TrainConfig(epochs=3, batch_size=10, lr=1e-2)
    hook = FlatnessPenalty(mu=0.0, K=0.0)
    sciprune.fit(model, (X, Y), cfg, hooks=[hook])
    sciprune.fit(plain, (X, Y), cfg)
    for a, b in zip(model.parameters(), plain.parameters()):
        assert torch.equal(a, b)
    model2, _, _ = _setup("relu", True)
    hook = FlatnessPenalty(mu=1e-3, K=0.0, refresh=4)
    sciprune.fit(model2, (X, Y), cfg, hooks=[hook])
    assert hook.steps == 9 and len(hook.rho) == 3  # steps 1, 5, 9


@pytest.mark.parametrize("act,classes,mu", [("tanh", False, 0.5), ("relu", True, 0.05), ("tanh", True, 0.0)])
def test_hgnp_score_is_the_gate_derivative_of_F(act, classes, mu):
    model, X, Y = _setup(act, classes, seed=1)
    loss = "cross_entropy" if classes else "mse"
    d = top_direction(model, X, Y, loss=loss)
    params = {n: p.detach() for n, p in model.named_parameters()}
    widths = [h.size for h in hidden_layers(model)]

    def F_of(gates):
        L = _loss(_gated_call(model, params, X, gates), Y)
        return L + mu * torch.clamp(_dense_q(model, d, X, Y, params, gates) - 0.0, min=0) if mu else L

    ref = grad(F_of)([torch.ones(w, dtype=F64) for w in widths])
    res = sciprune.scores(model, "hgnp", (X, Y), mu=mu, K=0.0)
    for h, r in zip(hidden_layers(model), ref):
        assert_close(res[h.weight], r.abs(), rtol=1e-8, what=h.weight)


def test_hgnp_without_penalty_is_the_root_of_taylor_neuron_on_one_batch():
    model, X, Y = _setup("tanh", False, seed=2)
    a = sciprune.scores(model, "hgnp", (X, Y), mu=0.0)
    b = sciprune.scores(model, "taylor-neuron", (X, Y))
    for n in a:
        assert_close(a[n], b[n].sqrt(), rtol=1e-10)


def test_hgnp_scores_one_random_batch_drawn_with_the_seed():
    model, X, Y = _setup("tanh", False, seed=4)
    s1 = sciprune.scores(model, "hgnp", (X, Y), batch_size=8, seed=5, mu=0.1)
    s2 = sciprune.scores(model, "hgnp", (X, Y), batch_size=8, seed=5, mu=0.1)
    s3 = sciprune.scores(model, "hgnp", (X, Y), batch_size=8, seed=6, mu=0.1)
    n = next(iter(s1))
    assert torch.equal(s1[n], s2[n]) and not torch.equal(s1[n], s3[n])


@pytest.mark.parametrize("opts,needle", [({"mu": -1.0}, "mu"), ({"K": "big"}, "K"), ({"fisher": "x"}, "fisher")])
def test_bad_options_one_line(opts, needle):
    model, X, Y = _setup("tanh", False)
    assert_raises_user_error(lambda: sciprune.scores(model, "hgnp", (X, Y), **opts), needle)
    assert_raises_user_error(lambda: FlatnessPenalty(**{"mu": 1.0, "K": 0.0, **opts}), needle)


def test_penalty_refuses_the_ensemble_state():
    from sciprune.hooks import FitState

    model, X, Y = _setup("tanh", False)
    state = FitState(model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=1)
    assert_raises_user_error(lambda: FlatnessPenalty(mu=1.0, K=0.0).after_backward(state), "sciprune.fit")


def test_penalty_gradient_equals_torch_func_gradient_of_the_dense_form():
    """grad of v^T H v (v fixed) by the double backward against torch.func.grad through torch.func.hessian."""
    model, X, Y = _setup("relu", True, seed=3)
    d = top_direction(model, X, Y, loss="cross_entropy")
    _, q = curvature_along(model, d, X, Y, loss="cross_entropy")
    names = [n for n, _ in model.named_parameters()]
    got = torch.autograd.grad(q, list(model.parameters()), allow_unused=True)
    ref = grad(lambda p: _dense_q(model, d, X, Y, p))({n: p.detach() for n, p in model.named_parameters()})
    for n, g in zip(names, got):
        assert_close(torch.zeros_like(ref[n]) if g is None else g, ref[n], rtol=1e-9, what=n)


@pytest.mark.parametrize("act,classes", [("tanh", False), ("relu", True)])
def test_rho_is_the_top_eigenvalue_of_the_dense_kronecker_product(act, classes):
    from sciprune.curvature import kfac_factors

    model, X, Y = _setup(act, classes, seed=5)
    loss = "cross_entropy" if classes else "mse"
    d = top_direction(model, X, Y, loss=loss)
    f = kfac_factors(model, (X, Y), loss=loss)[d.layer]
    dense = torch.kron(f.G.double(), f.A.double())
    assert_close(d.rho, float(torch.linalg.eigvalsh(dense)[-1]), rtol=1e-10)
    v = torch.cat([d.weight, d.bias[:, None]], dim=1).reshape(-1)  # row-major vec of [W b] = kron(u_G, u_A)
    assert_close(dense @ v, d.rho * v, rtol=1e-9)
    rhos = {n: float(torch.linalg.eigvalsh(torch.kron(g.G.double(), g.A.double()))[-1])
            for n, g in kfac_factors(model, (X, Y), loss=loss).items()}
    assert d.layer == max(rhos, key=rhos.get)


def test_hgnp_refuses_a_model_that_is_not_a_linear_chain():
    class Twice(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 4)
            self.b = torch.nn.Linear(4, 1)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    X, Y = torch.randn(8, 3), torch.randn(8, 1)
    assert_raises_user_error(lambda: sciprune.scores(Twice(), "hgnp", (X, Y)), "nn.Sequential")


def test_hgnp_batch_is_random_rows_of_resident_data():
    """The scored batch is batch_size rows drawn with the seed (torch.randperm), not consecutive rows."""
    from sciprune.batches import as_batches
    from sciprune.criteria.hgnp import one_batch

    X, Y = torch.arange(20.0)[:, None], torch.zeros(20, 1)
    Xb, _ = one_batch(as_batches((X, Y), batch_size=6), torch.Generator().manual_seed(7))
    expected = torch.randperm(20, generator=torch.Generator().manual_seed(7))[:6].double()
    assert torch.equal(Xb[:, 0].double(), expected)
