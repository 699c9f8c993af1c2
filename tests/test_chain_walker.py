"""sciprune.chain.Walker against torch.func per-sample Jacobians (jacrev under vmap), float64.

For every Linear t the walker's backward pass must give g[p, n] = J_t(x_n)^T V[p, n] with
J_t = dy/dz_t the per-sample Jacobian of the output with respect to the layer's pre-activation, for
one model and for a stacked ensemble, several activations and depths.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from sciprune.chain import Factored, Walker
from sciprune.ensemble import stack_models
from sciprune.errors import SciPruneError
from sciprune.models import Sine

ACTS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "sin": lambda: Sine(1.3), "silu": nn.SiLU,
        "leaky_relu": lambda: nn.LeakyReLU(0.2), "softplus": nn.Softplus}


def _model(act: str, widths: list[int], K: int, *, seed: int, end_act: bool = False) -> nn.Sequential:
    torch.manual_seed(seed)
    sizes = [3, *widths, K]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, bias=i != 1))  # one layer without bias
        if i < len(sizes) - 2 or end_act:
            layers.append(ACTS[act]())
    return nn.Sequential(*layers).to(torch.float64)


def _jacobians(model: nn.Sequential, params: dict, x: torch.Tensor, t: int) -> torch.Tensor:
    """(B, K, out_t): dy/dz_t per sample, z_t the output of child t, by jacrev of the rest of the chain."""
    children = list(model.named_children())

    def z_of(xn):
        h = xn
        for name, m in children[: t + 1]:
            h = functional_call(m, {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(name + ".")}, (h,))
        return h

    def rest(z):
        h = z
        for name, m in children[t + 1 :]:
            h = functional_call(m, {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(name + ".")}, (h,))
        return h

    return vmap(lambda xn: jacrev(rest)(z_of(xn)))(x)


CASES = [("tanh", [5]), ("relu", [6, 4]), ("gelu", [4, 5, 3]), ("sin", [5, 5]), ("silu", [4]),
         ("leaky_relu", [3, 6]), ("softplus", [4, 4])]


@pytest.mark.parametrize("act,widths", CASES)
@pytest.mark.parametrize("end_act", [False, True])
def test_one_model_matches_per_sample_jacobians(act, widths, end_act):
    K, B = 3, 11
    model = _model(act, widths, K, seed=len(widths), end_act=end_act)
    params = dict(model.named_parameters())
    x = torch.randn(B, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    chain = Walker(model)
    inputs, y = chain.forward(x)
    torch.testing.assert_close(y, model(x), rtol=1e-14, atol=1e-14)
    eye = torch.eye(K, dtype=torch.float64)[:, None, :]  # (K, 1, K): exact, constant over samples
    V = torch.randn(4, B, K, dtype=torch.float64, generator=torch.Generator().manual_seed(3))  # varying cotangents
    J = {t: _jacobians(model, params, x, t) for t in chain.layers.values()}
    seen_exact = {t: g.clone() for t, g in chain.backward(inputs, y, eye)}
    seen_probe = {t: g.clone() for t, g in chain.backward(inputs, y, V)}
    assert sorted(seen_exact) == sorted(chain.layers.values())
    for t, Jt in J.items():
        torch.testing.assert_close(seen_exact[t].expand(K, B, -1), Jt.permute(1, 0, 2), rtol=1e-12, atol=1e-13)
        torch.testing.assert_close(seen_probe[t], torch.einsum("pnk,nki->pni", V, Jt), rtol=1e-12, atol=1e-13)
        a = inputs[t]  # the Linear's input: z_t = a W^T + b
        torch.testing.assert_close(chain.output_of(t, inputs, y), nn.functional.linear(a, chain.weight(t), model[t].bias))


@pytest.mark.parametrize("stop_layer", [0, 1, 2])
def test_factored_last_layer_and_stop(stop_layer):
    model = _model("tanh", [5, 4], 2, seed=0)
    x = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    chain = Walker(model)
    inputs, y = chain.forward(x)
    stop = list(chain.layers.values())[stop_layer]
    V = torch.randn(3, 7, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    full = {t: g.clone() for t, g in chain.backward(inputs, y, V)}
    got = list(chain.backward_factored(inputs, y, V, stop))
    assert [t for t, _ in got] == [t for t in sorted(full, reverse=True) if t >= stop]
    t_last, f = got[-1]
    assert isinstance(f, Factored) and all(not isinstance(g, Factored) for _, g in got[:-1])
    torch.testing.assert_close(chain.complete(f), full[t_last], rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("act,widths", CASES[:4])
@pytest.mark.parametrize("shared_x", [True, False])
def test_stacked_ensemble_matches_each_members_jacobians(act, widths, shared_x):
    M, K, B = 3, 2, 9
    members = [_model(act, widths, K, seed=10 + m) for m in range(M)]
    P = stack_models(members)
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(B, 3, dtype=torch.float64, generator=gen)
    X = x.expand(M, B, 3) if shared_x else torch.randn(M, B, 3, dtype=torch.float64, generator=gen)
    chain = Walker(members[0], P)
    inputs, y = chain.forward(X)
    for m in range(M):
        torch.testing.assert_close(y[m], members[m](X[m]), rtol=1e-14, atol=1e-14)
    eye = torch.eye(K, dtype=torch.float64).view(1, K, 1, K)
    V = torch.randn(M, 4, B, K, dtype=torch.float64, generator=gen)
    exact = {t: g.clone() for t, g in chain.backward(inputs, y, eye)}
    probe = {t: g.clone() for t, g in chain.backward(inputs, y, V)}
    for m, model in enumerate(members):
        params = dict(model.named_parameters())
        for t in chain.layers.values():
            Jt = _jacobians(model, params, X[m], t)
            torch.testing.assert_close(exact[t].expand(M, K, B, -1)[m], Jt.permute(1, 0, 2), rtol=1e-12, atol=1e-13)
            torch.testing.assert_close(probe[t][m], torch.einsum("pnk,nki->pni", V[m], Jt), rtol=1e-12, atol=1e-13)


def test_loss_cotangent_gives_the_loss_gradient_with_respect_to_each_pre_activation():
    model = _model("tanh", [6, 5], 2, seed=1)
    x = torch.randn(13, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    Y = torch.randn(13, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    chain = Walker(model)
    inputs, y = chain.forward(x)
    got = {t: g[0].clone() for t, g in chain.backward(inputs, y, (2.0 * (y - Y) / Y.numel())[None])}
    # autograd: retain every Linear's output
    zs, h = {}, x
    for t, m in enumerate(model):
        h = m(h)
        if isinstance(m, nn.Linear):
            h.retain_grad()
            zs[t] = h
    nn.functional.mse_loss(h, Y).backward()
    for t, z in zs.items():
        torch.testing.assert_close(got[t], z.grad, rtol=1e-12, atol=1e-14)


def test_a_chain_with_a_module_that_is_not_elementwise_is_refused():
    with pytest.raises(SciPruneError, match="not an elementwise activation"):
        Walker(nn.Sequential(nn.Linear(2, 3), nn.Softmax(-1), nn.Linear(3, 1)))
    with pytest.raises(SciPruneError, match="available"):
        Walker(nn.Sequential(nn.Linear(2, 3))).index_of(["1.weight"])
