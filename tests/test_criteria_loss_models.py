"""``obd``, ``lm`` and ``qm`` (Laurent et al. 2020, arXiv 2006.12279) against dense float64 references.

The reference is built without sciprune's chain walker or loss module: per-sample output Jacobians of
the weights with ``torch.func.jacrev`` through ``functional_call``, the output Hessian of the data-set
loss (``F.mse_loss`` / ``F.cross_entropy``, mean reductions) with ``torch.func.hessian``, and the GGN
``J^T H J`` formed densely; the gradient with ``torch.func.grad``. The criteria contract
(``tests/test_criteria_contract.py``) covers the three methods as well.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.func import functional_call, grad, hessian, jacrev

import sciprune
from sciprune.config import parse_case
from sciprune.chain import Walker
from sciprune.criteria._loss_models import loss_model_terms, mean_gradient, weight_ggn_diagonal
from sciprune.errors import ConfigError, SciPruneError
from sciprune.masks import get_masks, prunable_names

from helpers import assert_close

F64 = torch.float64
METHODS = ["obd", "lm", "qm"]


def _model(out=2, seed=0):
    return sciprune.MLP(3, [5, 4], out, "tanh", seed=seed).to(F64)


def _regression(n=12, seed=1):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=F64)
    return X, torch.stack([torch.sin(X[:, 0]) * X[:, 1], X[:, 2] ** 2], 1)


def _classification(n=12, seed=2, classes=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=F64), torch.randint(0, classes, (n,), generator=g)


def _loss(Y):
    return (lambda y: F.mse_loss(y, Y)) if Y.is_floating_point() else (lambda y: F.cross_entropy(y, Y))


class _Dense:
    """Flat-weight view of a model on data (X, Y): outputs, loss, gradient, GGN and Hessian, densely."""

    def __init__(self, model, X, Y):
        self.model, self.X, self.Y = model, X, Y
        self.params = {n: p.detach() for n, p in model.named_parameters()}
        self.names = prunable_names(model)
        self.shapes = [self.params[n].shape for n in self.names]
        self.w0 = torch.cat([self.params[n].reshape(-1) for n in self.names])
        self.L = _loss(Y)

    def outputs(self, w):
        parts = torch.split(w, [s.numel() for s in self.shapes])
        ws = {n: p.reshape(s) for n, p, s in zip(self.names, parts, self.shapes)}
        return functional_call(self.model, {**self.params, **ws}, (self.X,))

    def split(self, flat):
        return {n: p.reshape(s) for n, p, s in zip(self.names, torch.split(flat, [s.numel() for s in self.shapes]),
                                                    self.shapes)}

    def ggn_diag(self):
        """diag(J^T H_out J): J (N C, P) the output Jacobian, H_out the Hessian of L in the outputs."""
        y = self.outputs(self.w0)
        J = jacrev(lambda w: self.outputs(w).reshape(-1))(self.w0)
        H = hessian(lambda v: self.L(v.reshape(y.shape)))(y.reshape(-1).detach())
        return self.split(torch.diagonal(J.T @ H @ J))

    def gradient(self):
        return self.split(grad(lambda w: self.L(self.outputs(w)))(self.w0))

    def hessian_diag(self):
        return self.split(torch.diagonal(hessian(lambda w: self.L(self.outputs(w)))(self.w0)))

    def formula(self, *, g, d, lam=0.0):
        """r = |-g W + 1/2 d W^2| + 1/2 lambda W^2 entry by entry (g, d: name-keyed or None)."""
        out = {}
        for n in self.names:
            W = self.params[n]
            gi = g[n] if g is not None else torch.zeros_like(W)
            di = d[n] if d is not None else torch.zeros_like(W)
            out[n] = (-gi * W + 0.5 * di * W * W).abs() + 0.5 * lam * W * W
        return out


def _close_dicts(a, b, rtol=1e-10, what=""):
    assert a.keys() == b.keys()
    for n in a:
        assert_close(a[n], b[n], rtol=rtol, what=f"{what} {n}")


@pytest.mark.parametrize("task", ["mse", "cross_entropy"])
def test_ggn_diagonal_equals_dense_jt_h_j(task):
    model = _model(3 if task == "cross_entropy" else 2)
    X, Y = _classification() if task == "cross_entropy" else _regression()
    ref = _Dense(model, X, Y).ggn_diag()
    assert min(float(t.abs().max()) for t in ref.values()) > 1e-4  # every layer has curvature to compare
    _close_dicts(weight_ggn_diagonal(model, sciprune.batches.as_batches((X, Y)), prunable_names(model)), ref,
                 what=task)


@pytest.mark.parametrize("task", ["mse", "cross_entropy"])
@pytest.mark.parametrize("method", METHODS)
def test_scores_equal_the_formula_on_dense_references(task, method):
    model = _model(3 if task == "cross_entropy" else 2)
    X, Y = _classification() if task == "cross_entropy" else _regression()
    dense = _Dense(model, X, Y)
    g = dense.gradient() if method in ("lm", "qm") else None
    d = dense.ggn_diag() if method in ("obd", "qm") else None
    options = {} if method == "obd" else {"locality": 0.37}
    want = dense.formula(g=g, d=d, lam=options.get("locality", 0.0))
    _close_dicts(sciprune.scores(model, method, (X, Y), batch_size=5, **options), want, what=method)


def test_obd_equals_half_hessian_diagonal_where_the_residual_vanishes():
    """At a perfect fit of an MSE problem the GGN is the Hessian: OBD's original 1/2 h_ii W^2."""
    model = _model()
    X, _ = _regression()
    with torch.no_grad():
        Y = model(X)
    dense = _Dense(model, X, Y)
    want = {n: 0.5 * h * dense.params[n] ** 2 for n, h in dense.hessian_diag().items()}
    _close_dicts(sciprune.scores(model, "obd", (X, Y)), want, what="obd at zero residual")
    _close_dicts(sciprune.scores(model, "qm", (X, Y)), want, what="qm at zero residual (g = 0)")


def test_lm_at_defaults_equals_gradient_and_mse_factor():
    """LM without locality on all rows is |W dL/dW|, the ``gradient`` criterion; and for MSE the GGN
    diagonal is (2 / (N C)) sum (dy/dW)^2 (sciprune's mean over samples and outputs)."""
    model = _model()
    X, Y = _regression()
    _close_dicts(sciprune.scores(model, "lm", (X, Y)), sciprune.scores(model, "gradient", (X, Y)), rtol=1e-13)
    dense = _Dense(model, X, Y)
    J = jacrev(lambda w: dense.outputs(w).reshape(-1))(dense.w0)
    N, C = Y.shape
    _close_dicts(dense.split((2.0 / (N * C)) * (J * J).sum(0)), dense.ggn_diag(), what="MSE factor")


def test_obd_for_mse_is_taylor_output_over_the_output_count():
    """With H_n = (2/C) I, 1/2 d W^2 = W^2 E[sum_k (dy_k/dz_i)^2 a_j^2] / C: ``taylor-output`` / C (same
    ranking); for cross-entropy H_n is not a multiple of I and the two differ."""
    model = sciprune.MLP(3, [5, 4], 3, "tanh", seed=0).to(F64)
    X, _ = _regression()
    Y = torch.randn(len(X), 3, generator=torch.Generator().manual_seed(4), dtype=F64)
    obd, tay = sciprune.scores(model, "obd", (X, Y)), sciprune.scores(model, "taylor-output", (X, Y))
    _close_dicts(obd, {n: t / 3 for n, t in tay.items()}, rtol=1e-12, what="obd vs taylor-output / C")
    Xc, Yc = _classification()
    obd, tay = sciprune.scores(model, "obd", (Xc, Yc)), sciprune.scores(model, "taylor-output", (Xc, Yc))
    assert any(not torch.allclose(obd[n] * 3, tay[n]) for n in obd)


def test_obd_diagonal_accumulates_every_sample():
    """Torch-Pruning's GroupHessianImportance kept only the last sample's term: here d over two rows is
    the mean of the single-row diagonals, whatever the batching."""
    model = _model(3)
    X, Y = _classification(n=2)
    names = prunable_names(model)
    one = [weight_ggn_diagonal(model, [(X[i:i + 1], Y[i:i + 1])], names) for i in range(2)]
    assert any(not torch.allclose(one[0][n], one[1][n]) for n in names)
    want = {n: 0.5 * (one[0][n] + one[1][n]) for n in names}
    for bs in (1, 2):
        _close_dicts(weight_ggn_diagonal(model, sciprune.batches.as_batches((X, Y), batch_size=bs), names), want,
                     rtol=1e-13, what=f"batch_size {bs}")
    W = {n: p.detach() for n, p in model.named_parameters()}
    _close_dicts(sciprune.scores(model, "obd", (X, Y), batch_size=1), {n: 0.5 * want[n] * W[n] ** 2 for n in names},
                 rtol=1e-13)


def _ranking(scores):
    return torch.cat([s.reshape(-1) for s in scores.values()]).argsort(stable=True)


@pytest.mark.parametrize("method", ["lm", "qm"])
def test_magnitude_is_the_infinite_locality_limit(method):
    model = _model()
    data = _regression()
    mag = _ranking(sciprune.scores(model, "magnitude"))
    assert not torch.equal(_ranking(sciprune.scores(model, method, data)), mag)  # lambda = 0: another order
    assert torch.equal(_ranking(sciprune.scores(model, method, data, locality=1e12)), mag)


@settings(max_examples=15, deadline=None)
@given(lam=st.floats(0.0, 1e3), seed=st.integers(0, 2**16))
def test_locality_adds_half_lambda_w_squared_outside_the_absolute_value(lam, seed):
    model = _model(seed=seed)
    data = _regression(seed=seed + 1)
    base = sciprune.scores(model, "qm", data)
    got = sciprune.scores(model, "qm", data, locality=lam)
    for n, p in model.named_parameters():
        if n in got:
            assert bool((base[n] >= 0).all())
            assert_close(got[n], base[n] + 0.5 * lam * p.detach() ** 2, rtol=1e-13, what=n)


@pytest.mark.parametrize("method", METHODS)
def test_multi_step_geometric_schedule_equals_rescoring_each_step(method):
    model, data, target = _model(), _regression(n=20), 0.8
    schedule = {"kind": "multi-step", "steps": 3, "spacing": "geometric"}
    by_hand = copy.deepcopy(model)
    reports = sciprune.prune_scheduled(model, method, target, data, schedule=schedule, seed=3, examples=15)
    steps = sciprune.schedules.parse_schedule(schedule).targets(target)
    previous = None
    for k, ratio in enumerate(steps):
        sciprune.prune(by_hand, method, ratio, data, seed=3, examples=15)
        masks = get_masks(by_hand)
        if previous is not None:
            assert all(bool((masks[n] <= previous[n]).all()) for n in masks)  # nested
        previous = {n: m.clone() for n, m in masks.items()}
    final = get_masks(model)
    assert all(torch.equal(final[n], previous[n]) for n in final)
    assert reports[-1].pruned == math.floor(target * reports[-1].total + 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_examples_subset_is_the_seeded_draw_and_independent_of_the_batching(method):
    model = _model()
    X, Y = _regression(n=30)
    k, seed = 11, 7
    idx = torch.randperm(30, generator=torch.Generator().manual_seed(seed))[:k].sort().values
    ref = sciprune.scores(model, method, (X[idx], Y[idx]))
    got = sciprune.scores(model, method, (X, Y), seed=seed, examples=k)
    _close_dicts(got, ref, rtol=1e-13, what="subset")
    batched = sciprune.scores(model, method, (X, Y), seed=seed, examples=k, batch_size=7)
    loader = [(X[i:i + 7].numpy(), Y[i:i + 7].numpy()) for i in range(0, 30, 7)]
    again = sciprune.scores(model, method, loader, seed=seed, examples=k)
    assert all(torch.equal(batched[n], again[n]) for n in batched)
    _close_dicts(batched, ref, rtol=1e-12, what="subset in batches of 7")
    other = sciprune.scores(model, method, (X, Y), seed=seed + 1, examples=k)
    assert any(not torch.allclose(other[n], got[n]) for n in got)
    every = sciprune.scores(model, method, (X, Y))
    for many in (30, 1000):  # at least the data: every row (the documented clipping rule)
        same = sciprune.scores(model, method, (X, Y), seed=seed, examples=many)
        assert all(torch.equal(same[n], every[n]) for n in every)


_BAD = {"examples": [0, -3, 2.5, True, "10"], "locality": [-1e-3, float("nan"), float("inf"), True, "0.1"]}


@pytest.mark.parametrize("method, option, value", [
    (m, o, v) for m in METHODS for o, vs in _BAD.items() if o in sciprune.criteria.get(m).options for v in vs])
def test_bad_options_raise_one_line(method, option, value):
    with pytest.raises(SciPruneError) as err:
        sciprune.scores(_model(), method, _regression(), **{option: value})
    msg = str(err.value)
    assert option in msg and repr(value) in msg and "\n" not in msg


def test_case_file_options_are_checked_at_load():
    case = parse_case({"prune": {"methods": ["qm", "obd"], "options": {"qm": {"locality": 1e-3, "examples": 1000},
                                                                       "obd": {"examples": 1000}}}})
    assert case.prune.options["qm"] == {"locality": 1e-3, "examples": 1000}
    for bad, needle in [({"qm": {"locality": -1.0}}, "locality"), ({"obd": {"examples": 0}}, "examples")]:
        methods = list(bad)
        with pytest.raises(ConfigError, match=f"options.{methods[0]}.*{needle}"):
            parse_case({"prune": {"methods": methods, "options": bad}})


def test_scores_are_float64_for_a_float32_model_and_close_to_float64():
    model = _model()
    X, Y = _regression()
    want = sciprune.scores(model, "qm", (X, Y))
    got = sciprune.scores(copy.deepcopy(model).float(), "qm", (X.float(), Y.float()))
    for n in want:
        assert got[n].dtype == F64
        np.testing.assert_allclose(got[n].numpy(), want[n].numpy(), rtol=1e-3, atol=1e-6 * float(want[n].max()))


@pytest.mark.parametrize("task", ["mse", "cross_entropy"])
def test_fused_walk_gradient_equals_autograd_and_diagonal_alone(task):
    """QM's one walk of C + 1 cotangents gives autograd's mean gradient and the diagonal-only walk's
    ``d`` (1e-12), on a pruned network, whatever the batching."""
    model = _model(3 if task == "cross_entropy" else 2)
    sciprune.prune(model, "magnitude", 0.3)
    X, Y = _classification(n=23) if task == "cross_entropy" else _regression(n=23)
    names = prunable_names(model)
    want_g = mean_gradient(model, sciprune.batches.as_batches((X, Y)), names)
    want_d = weight_ggn_diagonal(model, sciprune.batches.as_batches((X, Y)), names)
    for bs in (None, 5):
        g, d = loss_model_terms(model, sciprune.batches.as_batches((X, Y), batch_size=bs), names, grad=True, diag=True)
        _close_dicts(g, want_g, rtol=1e-12, what=f"g, batch {bs}")
        _close_dicts(d, want_d, rtol=1e-12, what=f"d, batch {bs}")


@pytest.mark.parametrize("method", METHODS)
def test_one_forward_pass_per_batch(method, monkeypatch):
    """The cost claim: OBD and QM walk the chain once per batch (QM's gradient rides along as one more
    cotangent), LM runs one autograd forward and backward."""
    calls = []
    forward = Walker.forward
    monkeypatch.setattr(Walker, "forward", lambda self, x, **k: calls.append("walk") or forward(self, x, **k))
    model = _model()
    model.register_forward_pre_hook(lambda mod, inp: calls.append("module"))
    X, Y = _regression(n=12)
    sciprune.scores(model, method, (X, Y), batch_size=5)
    assert len(calls) == 3  # 12 rows in batches of 5
