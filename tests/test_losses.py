"""sciprune.losses against torch.nn.functional and torch.autograd / torch.func in float64.

References: values are ``F.mse_loss`` / ``F.cross_entropy`` with the matching ``reduction``; gradients
are ``torch.autograd.grad`` of those values; output-space Hessians are ``torch.func.hessian`` of the
per-sample loss ``F.mse_loss(y_n, t_n)`` / ``F.cross_entropy(y_n, t_n)`` and of the batch mean.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from malformed import assert_raises_user_error
from torch.func import hessian

from sciprune import losses

F64 = torch.float64
TOL = dict(rtol=1e-12, atol=1e-13)


def _problem(loss: str, B: int, C: int, seed: int, *, probabilities: bool = False):
    g = torch.Generator().manual_seed(seed)
    y = 2.0 * torch.randn(B, C, generator=g, dtype=F64)
    if loss == "mse":
        Y = torch.randn(B, C, generator=g, dtype=F64)
    elif probabilities:
        Y = torch.softmax(torch.randn(B, C, generator=g, dtype=F64), -1)
    else:
        Y = torch.randint(0, C, (B,), generator=g)
    return y, Y


def _reference(loss: str, y: torch.Tensor, T: torch.Tensor, reduction: str) -> torch.Tensor:
    fn = F.mse_loss if loss == "mse" else F.cross_entropy
    if reduction == "sample_sum":
        return fn(y, T) * y.shape[0]  # sum_n l_n = B * mean, l_n the mean over the sample's outputs
    return fn(y, T, reduction=reduction)


CASES = [("mse", False), ("cross_entropy", False), ("cross_entropy", True)]


@pytest.mark.parametrize("loss, probs", CASES)
@pytest.mark.parametrize("reduction", ["none", "sum", "mean", "sample_sum"])
def test_values_and_gradients_match_torch(loss, probs, reduction):
    y, Y = _problem(loss, 9, 4, 0, probabilities=probs)
    T = losses.targets(loss, y, Y, probabilities=probs)
    ref = _reference(loss, y, T, reduction)
    torch.testing.assert_close(losses.value(loss, y, T, reduction), ref, **TOL)
    if reduction == "none":
        return
    yg = y.clone().requires_grad_()
    (want,) = torch.autograd.grad(_reference(loss, yg, T, reduction), yg)
    torch.testing.assert_close(losses.out_grad(loss, y, T, reduction), want, **TOL)
    assert losses.count(loss, y) * float(F.mse_loss(y, T) if loss == "mse" else F.cross_entropy(y, T)) == pytest.approx(
        float(_reference(loss, y, T, "sum")), rel=1e-13)


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 6), C=st.integers(1, 5), seed=st.integers(0, 10**6), loss=st.sampled_from(losses.LOSSES))
def test_sum_mean_sample_sum_are_consistent(B, C, seed, loss):
    """sum = count * mean and sample_sum = B * mean, for values and for gradients."""
    y, Y = _problem(loss, B, C, seed)
    T = losses.targets(loss, y, Y)
    n = losses.count(loss, y)
    mean = losses.value(loss, y, T)
    torch.testing.assert_close(losses.value(loss, y, T, "sum"), n * mean, **TOL)
    torch.testing.assert_close(losses.value(loss, y, T, "sample_sum"), B * mean, **TOL)
    torch.testing.assert_close(losses.out_grad(loss, y, T, "sum"), n * losses.out_grad(loss, y, T), **TOL)
    torch.testing.assert_close(losses.out_grad(loss, y, T, "sample_sum"), B * losses.out_grad(loss, y, T), **TOL)


@pytest.mark.parametrize("loss, probs", CASES)
def test_output_hessians_match_torch_func(loss, probs):
    B, C = 5, 4
    y, Y = _problem(loss, B, C, 1, probabilities=probs)
    T = losses.targets(loss, y, Y, probabilities=probs)
    fn = F.mse_loss if loss == "mse" else F.cross_entropy
    per_sample = torch.stack([hessian(lambda v, n=n: fn(v[None], T[n : n + 1]))(y[n]) for n in range(B)])
    torch.testing.assert_close(losses.out_hessian(loss, y), per_sample, **TOL)
    full = hessian(lambda v: fn(v, T))(y)  # (B, C, B, C) of the batch mean: block diagonal
    blocks = torch.stack([full[n, :, n, :] for n in range(B)])
    torch.testing.assert_close(losses.out_hessian(loss, y, "mean"), blocks, **TOL)
    off = full.clone()
    for n in range(B):
        off[n, :, n, :] = 0
    assert float(off.abs().max()) == 0.0
    summed = hessian(lambda v: fn(v, T, reduction="sum"))(y)
    torch.testing.assert_close(losses.out_hessian(loss, y, "sum"), torch.stack([summed[n, :, n, :] for n in range(B)]), **TOL)
    # the product and the square root the curvature operators use are the same H_n
    u = torch.randn(B, C, dtype=F64, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(losses.out_hessian_product(loss, y, u), (per_sample @ u[:, :, None])[..., 0], **TOL)
    S = losses.out_hessian_sqrt(loss, y).expand(B, C, C)
    torch.testing.assert_close(S.mT @ S, per_sample, **TOL)


@pytest.mark.parametrize("loss", losses.LOSSES)
def test_sampled_out_grad_has_the_hessian_as_second_moment(loss):
    """Each draw is dl_n/dy at a target drawn from the model; the mean of g g^T over draws tends to H_n."""
    y, _ = _problem(loss, 3, 3, 4)
    rng = np.random.default_rng(0)
    K = 20000
    draws = losses.sampled_out_grad(loss, y.repeat(K, 1), rng)[:, 0].view(K, 3, 3).transpose(0, 1)  # (B, K, C)
    if loss == "cross_entropy":  # every draw is p - e_t for a class t
        p = torch.softmax(y, -1)[:, None, :]
        e = p - draws
        assert torch.allclose(e.sum(-1), torch.ones(()).to(F64), atol=1e-12)
        assert torch.allclose(e, e.round(), atol=1e-12)
    second = draws.mT @ draws / draws.shape[1]
    assert float((second - losses.out_hessian(loss, y)).abs().max()) < 0.05


def test_leading_dimensions_broadcast_targets():
    """Outputs (M, B, C) of M stacked models against shared targets: per-model terms, count and gradient."""
    for loss in losses.LOSSES:
        y = torch.randn(3, 6, 4, dtype=F64)
        _, Y = _problem(loss, 6, 4, 5)
        T = losses.targets(loss, y, Y)
        terms = losses.value(loss, y, T, "none")
        for m in range(3):
            Tm = losses.targets(loss, y[m], Y)
            torch.testing.assert_close(terms[m], losses.value(loss, y[m], Tm, "none"), **TOL)
            torch.testing.assert_close(losses.out_grad(loss, y, T, "sum")[m], losses.out_grad(loss, y[m], Tm, "sum"), **TOL)
            torch.testing.assert_close(losses.out_hessian(loss, y)[m], losses.out_hessian(loss, y[m]), **TOL)
        assert losses.count(loss, y) == losses.count(loss, y[0]) == (24 if loss == "mse" else 6)


def test_loss_chosen_from_the_dtype_of_the_targets():
    assert losses.loss_for_targets(torch.zeros(3, 2)) == "mse"
    assert losses.loss_for_targets(torch.zeros(3, dtype=torch.float16)) == "mse"
    for dt in (torch.int64, torch.int32, torch.uint8):
        assert losses.loss_for_targets(torch.zeros(3, dtype=dt)) == "cross_entropy"
    assert losses.resolve(None, torch.zeros(3, dtype=torch.long)) == "cross_entropy"
    assert losses.resolve("mse", torch.zeros(3, dtype=torch.long)) == "mse"  # an explicit name wins
    assert losses.torch_fn("mse") is F.mse_loss and losses.torch_fn("cross_entropy") is F.cross_entropy


def test_labels_of_any_integer_dtype_and_column_shape_give_int64_labels():
    y, Y = _problem("cross_entropy", 7, 3, 6)
    for Yx in (Y.int(), Y[:, None], Y.to(torch.uint8)):
        T = losses.targets("cross_entropy", y, Yx)
        assert T.dtype == torch.int64 and torch.equal(T, Y)


def test_bad_inputs_are_one_line_errors():
    y = torch.randn(4, 3, dtype=F64)
    lab = torch.tensor([0, 2, 1, 1])
    assert_raises_user_error(lambda: losses.check_loss("l1"), "loss must be one of", "'l1'", "mse")
    assert_raises_user_error(lambda: losses.check_loss(None), "loss must be one of", "None")
    assert_raises_user_error(lambda: losses.resolve("huber", lab), "loss must be one of", "'huber'")
    assert_raises_user_error(lambda: losses.loss_for_targets(torch.zeros(3, dtype=torch.bool)), "torch.bool")
    assert_raises_user_error(lambda: losses.loss_for_targets([0, 1]), "torch.Tensor", "list")
    assert_raises_user_error(lambda: losses.targets("mse", y, torch.randn(4, 2, dtype=F64)), "loss 'mse'", "(4, 3)", "(4, 2)")
    assert_raises_user_error(lambda: losses.targets("mse", y, lab), "loss 'mse'", "floating", "torch.int64")
    assert_raises_user_error(lambda: losses.targets("cross_entropy", y, torch.randn(4, 3, dtype=F64)),
                             "cross_entropy' needs integer labels", "(4,)")
    assert_raises_user_error(lambda: losses.targets("cross_entropy", y, torch.tensor([0, 1, 2])), "(4,)", "(3,)")
    assert_raises_user_error(lambda: losses.targets("cross_entropy", y, torch.tensor([0, 1, 3, 0])), "[0, 3)", "to 3")
    assert_raises_user_error(lambda: losses.targets("cross_entropy", y, torch.tensor([0, -1, 2, 0])), "[0, 3)", "-1")
    assert_raises_user_error(lambda: losses.targets("mse", torch.randn(4, dtype=F64), torch.randn(4, dtype=F64)),
                             "outputs", "(B, C)", "(4,)")
    assert_raises_user_error(lambda: losses.value("mse", y, y, "avg"), "reduction must be one of", "'avg'")
    assert_raises_user_error(lambda: losses.out_grad("mse", y, y, "none"), "reduction must be one of", "'none'")
    assert_raises_user_error(lambda: losses.value("mse", y[None], y, "mean"), "(B, C)", "'none'")
