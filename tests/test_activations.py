"""sciprune.activations: every activation's value, first and second derivative against autograd (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sciprune.activations import SUPPORTED, activation_of, is_supported
from sciprune.errors import SciPruneError
from sciprune.models import Sine

MODULES = {
    "tanh": nn.Tanh(), "relu": nn.ReLU(), "leaky_relu": nn.LeakyReLU(0.07), "gelu": nn.GELU(),
    "gelu_tanh": nn.GELU(approximate="tanh"), "sin": Sine(1.7), "sigmoid": nn.Sigmoid(), "silu": nn.SiLU(),
    "softplus": nn.Softplus(beta=1.5, threshold=3.0), "elu": nn.ELU(alpha=0.6), "identity": nn.Identity(),
    "hardswish (autodiff)": nn.Hardswish(), "relu inplace": nn.ReLU(inplace=True),
}


def _points() -> torch.Tensor:
    z = torch.linspace(-4.0, 4.0, 161, dtype=torch.float64) + 1e-3  # avoid the kinks at 0 exactly
    return torch.cat([z, torch.randn(200, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3])


def _autograd(m: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """act'(z) and act''(z) elementwise by reverse mode, the second by double backward."""
    z = z.clone().requires_grad_(True)
    out = m(z.clone()) if getattr(m, "inplace", False) else m(z)
    (d1,) = torch.autograd.grad(out.sum(), z, create_graph=True)
    if not d1.requires_grad:  # piecewise linear: the first derivative is constant in z
        return d1.detach(), torch.zeros_like(z)
    (d2,) = torch.autograd.grad(d1.sum(), z, allow_unused=True)
    return d1.detach(), (torch.zeros_like(z) if d2 is None else d2)


@pytest.mark.parametrize("key", list(MODULES))
def test_derivatives_match_autograd(key):
    m = MODULES[key]
    act = activation_of(m)
    z = _points()
    out = act.value(z.clone())
    ref1, ref2 = _autograd(m, z)
    torch.testing.assert_close(out, m(z.clone()), rtol=0, atol=0)
    torch.testing.assert_close(act.d1(z, out), ref1, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(act.d2(z, out), ref2, rtol=1e-10, atol=1e-12)
    g = torch.randn(3, *z.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(act.backward(g, z, out), g * ref1, rtol=1e-12, atol=1e-13)
    res = torch.empty_like(g)
    assert act.backward(g, z, out, res) is res
    torch.testing.assert_close(res, g * ref1, rtol=1e-12, atol=1e-13)
    buf = torch.empty_like(z)
    f = act.forward(z, buf)
    torch.testing.assert_close(f, out, rtol=0, atol=0)
    if act.piecewise_linear:
        assert torch.all(act.d2(z, out) == 0)


def test_every_supported_name_is_covered_and_flags_are_right():
    names = {activation_of(m).name for m in MODULES.values()}
    assert set(SUPPORTED) <= names
    assert {n for n in SUPPORTED if activation_of(MODULES[n]).piecewise_linear} == {"relu", "leaky_relu", "identity"}
    assert is_supported(Sine()) and not is_supported(nn.Hardswish())


def test_forward_keeps_its_input_for_an_inplace_module():
    z = _points()
    keep = z.clone()
    activation_of(nn.ReLU(inplace=True)).forward(z)
    assert torch.equal(z, keep)


def test_a_module_that_is_not_elementwise_is_refused():
    with pytest.raises(SciPruneError, match="not an elementwise activation"):
        activation_of(nn.Softmax(dim=-1))
    with pytest.raises(SciPruneError, match="not an elementwise activation"):
        activation_of(nn.Linear(2, 2))
