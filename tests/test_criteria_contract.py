"""The contract every registered criterion meets, parametrised over ``sciprune.methods()``.

Adding a module to ``sciprune/criteria`` adds it to every test here: name-keyed scores shaped like the
parameters, no side effects on the model, its mode, its gradients or the global RNG, determinism for
a seed, float64 support, and the same result for every accepted form of the data.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import sciprune
from sciprune import criteria
from sciprune.errors import SciPruneError
from sciprune.masks import get_masks, prunable_names, set_masks

from helpers import assert_close



METHODS = sciprune.methods()
#: Criteria scoring weights (shapes like the weights; neuron criteria: tests/test_neurons.py).
WEIGHT_METHODS = sciprune.methods("weight")
#: Criteria that draw their mini-batch's rows at random from resident data (HGNP's one random
#: mini-batch), so resident data with batch_size and the same rows cut into batches differ.
ROW_SAMPLERS = {"hgnp"}


def _model(dtype=torch.float32, seed=0):
    return sciprune.MLP(3, [8, 6], 2, "tanh", seed=seed).to(dtype)


def _arrays(n=40, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 3))
    Y = np.stack([np.sin(X[:, 0]) * X[:, 1], X[:, 2] ** 2], axis=1)
    return X, Y


def _tensors(dtype, n=40, seed=1):
    X, Y = _arrays(n, seed)
    return torch.as_tensor(X, dtype=dtype), torch.as_tensor(Y, dtype=dtype)


def _assert_scores_equal(a, b):
    assert a.keys() == b.keys()
    for n in a:
        assert torch.equal(a[n], b[n]), f"{n}: max diff {(a[n] - b[n]).abs().max().item():.3e}"


def test_registry_is_not_empty_and_has_the_core_methods():
    assert {"magnitude", "random"} <= set(METHODS)
    assert METHODS == sorted(METHODS)
    for name in METHODS:
        crit = criteria.get(name)
        assert crit.name == name and crit.summary and isinstance(crit.needs_data, bool)


@pytest.mark.parametrize("method", WEIGHT_METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_keys_shapes_dtype(method, dtype):
    model = _model(dtype)
    s = sciprune.scores(model, method, _tensors(dtype))
    params = dict(model.named_parameters())
    assert list(s) == prunable_names(model) == ["linear0.weight", "linear1.weight", "linear2.weight"]
    for n, t in s.items():
        assert isinstance(t, torch.Tensor) and t.shape == params[n].shape, n
        assert t.is_floating_point() and t.device == params[n].device, n
        assert bool(torch.isfinite(t).all()), n
        assert not t.requires_grad, n


@pytest.mark.parametrize("method", METHODS)
def test_names_subset(method):
    model = _model()
    s = sciprune.scores(model, method, _tensors(torch.float32), names=["linear1.weight"])
    assert list(s) == ["linear1.weight"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_grads", [True, False])
def test_no_side_effects(method, training, with_grads):
    model = _model(torch.float64)
    sciprune.prune(model, "random", 0.3, seed=4)  # a masked model: its masks must stay as they are
    masks = get_masks(model)
    model.train(training)
    X, Y = _tensors(torch.float64)
    if with_grads:
        torch.nn.functional.mse_loss(model(X), Y).backward()
    params = {n: p for n, p in model.named_parameters()}
    values = {n: p.detach().clone() for n, p in params.items()}
    grads = {n: p.grad for n, p in params.items()}
    grad_values = {n: (g.clone() if g is not None else None) for n, g in grads.items()}
    X0, Y0 = X.clone(), Y.clone()
    rng = torch.get_rng_state()

    s = sciprune.scores(model, method, (X, Y), seed=3)

    assert model.training is training
    assert all(m.training is training for m in model.modules())
    for n, p in model.named_parameters():
        assert p is params[n] and p.requires_grad, n
        assert torch.equal(p.detach(), values[n]), f"{method} changed {n}"
        assert p.grad is grads[n], f"{method} replaced {n}.grad"
        if grad_values[n] is not None:
            assert torch.equal(p.grad, grad_values[n]), f"{method} accumulated into {n}.grad"
    for n, m in get_masks(model).items():
        assert torch.equal(m, masks[n])
    assert torch.equal(X, X0) and torch.equal(Y, Y0)
    assert torch.equal(torch.get_rng_state(), rng), f"{method} used the global RNG"
    # the scores do not alias the parameters
    for t in s.values():
        t.add_(1.0)
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), values[n])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deterministic_for_a_seed(method, dtype):
    data = _tensors(dtype)
    a = sciprune.scores(_model(dtype), method, data, seed=11)
    b = sciprune.scores(_model(dtype), method, data, seed=11)
    _assert_scores_equal(a, b)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_data_forms_give_identical_results(method, dtype):
    model = _model(dtype)
    Xa, Ya = _arrays()
    X, Y = _tensors(dtype)
    ref = sciprune.scores(model, method, (X, Y), seed=5)
    _assert_scores_equal(ref, sciprune.scores(model, method, (Xa, Ya), seed=5))
    _assert_scores_equal(ref, sciprune.scores(model, method, [(X, Y)], seed=5))
    # the same mini-batches given as a tuple with batch_size and as a DataLoader-like list
    half = sciprune.scores(model, method, (X, Y), seed=5, batch_size=10)
    batches = [(Xa[i : i + 10], Ya[i : i + 10]) for i in range(0, 40, 10)]
    listed = sciprune.scores(model, method, batches, seed=5)
    if method in ROW_SAMPLERS:  # random rows from resident data, one whole batch of an iterable
        _assert_scores_equal(half, sciprune.scores(model, method, (Xa, Ya), seed=5, batch_size=10))
    else:
        _assert_scores_equal(half, listed)
    _assert_scores_equal(listed, sciprune.scores(model, method, tuple(batches), seed=5))
    _assert_scores_equal(listed, sciprune.scores(model, method, _Loader(batches), seed=5))


class _Loader:
    """A re-iterable that is not a list (like a DataLoader)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        for X, Y in self.batches:
            yield torch.as_tensor(X), torch.as_tensor(Y)


@pytest.mark.parametrize("method", [m for m in METHODS if criteria.get(m).needs_data])
def test_data_needed_but_missing_raises(method):
    with pytest.raises(SciPruneError, match="needs data"):
        sciprune.scores(_model(), method)


@pytest.mark.parametrize("method", [m for m in METHODS if not criteria.get(m).needs_data])
def test_data_free_methods_ignore_data(method):
    model = _model()
    _assert_scores_equal(sciprune.scores(model, method, seed=2), sciprune.scores(model, method, _tensors(torch.float32), seed=2))


@pytest.mark.parametrize("method", METHODS)
def test_prune_with_every_method_reaches_the_ratio(method):
    model = _model(torch.float64)
    rep = sciprune.prune(model, method, 0.6, _tensors(torch.float64), seed=1)
    assert rep.pruned == math.floor(0.6 * rep.total + 0.5)
    assert sciprune.sparsity(model)["weights"]["zeros"] >= rep.pruned


#: The criteria that compensate their removals with bias shifts (docs/api.md, ``compensate=None``).
COMPENSATING = ["ec", "ec-exact"]
SHIFTED_NAMES = ["linear0.weight", "linear2.weight"]  # a hidden layer (G_i varies) and the output layer


def _reference_shifts(model: torch.nn.Module, X: torch.Tensor, name: str) -> np.ndarray:
    """Brute force, float64: for each weight W_ij of layer ``name``, the bias shift db that minimises
    the linearised output change sum_{n,k} (dy_k/dz_i(x_n) (db - W_ij a_j(x_n)))^2, solved as a
    least-squares problem over all (sample, output) pairs by ``numpy.linalg.lstsq``. For the output
    layer (dy/dz = I) this is the exact optimum of the true output change, W_ij mean_n a_j(x_n)."""
    model = copy.deepcopy(model).to(torch.float64)
    X = X.to(torch.float64)
    layers = list(model)
    idx = [i for i, m in enumerate(layers) if m is model.get_submodule(name.rsplit(".", 1)[0])][0]
    before, after = torch.nn.Sequential(*layers[:idx]), torch.nn.Sequential(*layers[idx + 1:])
    with torch.no_grad():
        a = before(X).numpy()                                            # (N, in)
        z = layers[idx](before(X))
    J = np.stack([torch.autograd.functional.jacobian(after, z[n]).numpy() for n in range(len(X))])  # (N, K, out)
    W = layers[idx].weight.detach().numpy()
    ref = np.zeros_like(W)
    for i in range(W.shape[0]):
        col = J[:, :, i].reshape(-1, 1)
        for j in range(W.shape[1]):
            rhs = (J[:, :, i] * (W[i, j] * a[:, j])[:, None]).reshape(-1)
            ref[i, j] = np.linalg.lstsq(col, rhs, rcond=None)[0][0]
    return ref


def test_compensating_criteria_are_registered():
    assert set(COMPENSATING) <= set(METHODS)


@pytest.mark.parametrize("method", COMPENSATING)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_bias_shifts_equal_the_least_squares_optimum(method, dtype):
    """Compensating criteria return one shift per scored weight: the optimal shift of its row's bias."""
    model = _model(dtype)
    X, Y = _tensors(dtype)
    res = sciprune.pruning.score_result(model, method, (X, Y), seed=2, names=SHIFTED_NAMES)
    assert res.bias_shifts is not None and set(res.bias_shifts) == set(res.scores) == set(SHIFTED_NAMES)
    for n, t in res.bias_shifts.items():
        assert t.shape == res.scores[n].shape and t.is_floating_point() and not t.requires_grad, n
        ref = _reference_shifts(model, X, n)
        assert np.abs(ref).max() > 1e-3, n                              # a reference that can tell
        assert_close(t, ref, rtol=1e-9 if dtype == torch.float64 else 1e-5, what=f"{method} {n}")
    # the output layer's shift is W_ij times the mean of its input activation
    with torch.no_grad():
        a = torch.nn.Sequential(*list(model)[:-1])(X).to(torch.float64)
    W = model.linear2.weight.detach().to(torch.float64)
    assert_close(res.bias_shifts["linear2.weight"], W * a.mean(0), rtol=1e-9 if dtype == torch.float64 else 1e-5,
                 what=f"{method} output layer")


@pytest.mark.parametrize("method", [m for m in WEIGHT_METHODS if m not in COMPENSATING])
def test_criteria_without_compensation_return_no_shifts(method):
    """The other criteria rank only: no shifts, so ``prune(compensate=None)`` leaves the biases alone."""
    res = sciprune.pruning.score_result(_model(), method, _tensors(torch.float32), seed=2, names=SHIFTED_NAMES)
    assert res.bias_shifts is None or res.bias_shifts == {}, f"{method} returned bias shifts"
    assert sciprune.plan(_model(), method, _tensors(torch.float32), seed=2).shifts is None


@pytest.mark.parametrize("method", COMPENSATING)
def test_prune_adds_the_shifts_of_the_removed_weights_to_their_row_bias(method):
    model = _model(torch.float64)
    data = _tensors(torch.float64)
    p = sciprune.plan(model, method, data, seed=1)
    biases = {n: p_.detach().clone() for n, p_ in model.named_parameters() if n.endswith("bias")}
    sciprune.apply_plan(model, p, 0.5)
    for n, keep in get_masks(model).items():
        bias = n.rsplit(".", 1)[0] + ".bias"
        expect = biases[bias] + (p.shifts[n] * (~keep).to(torch.float64)).sum(dim=1)
        assert_close(dict(model.named_parameters())[bias], expect, rtol=1e-12, what=bias)
        assert (~keep).any(dim=1).any(), f"{n}: no row lost a weight"


@pytest.mark.parametrize("method", WEIGHT_METHODS)
@pytest.mark.parametrize("compensate", [None, True, False])
def test_prune_compensate_modes(method, compensate):
    """``compensate=None`` keeps the criterion's own shifts, True forces EC shifts, False none."""
    model = _model(torch.float64)
    data = _tensors(torch.float64)
    own = criteria.get(method).joint or sciprune.pruning.score_result(model, method, data, seed=1).bias_shifts is not None
    biases = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")}
    rep = sciprune.prune(model, method, 0.5, data, compensate=compensate, seed=1)
    expect = own if compensate is None else compensate
    assert rep.compensated is expect
    assert rep.pruned == math.floor(0.5 * rep.total + 0.5)
    changed = any(not torch.equal(p, biases[n]) for n, p in model.named_parameters() if n.endswith("bias"))
    assert changed is expect


def test_unknown_method_lists_available():
    with pytest.raises(SciPruneError) as err:
        sciprune.scores(_model(), "no-such-method")
    msg = str(err.value)
    assert "no-such-method" in msg
    for name in METHODS:
        assert name in msg
    with pytest.raises(SciPruneError):
        sciprune.prune(_model(), "no-such-method", 0.5)


@pytest.mark.parametrize("method", METHODS)
def test_unknown_option_lists_allowed(method):
    with pytest.raises(SciPruneError) as err:
        sciprune.scores(_model(), method, _tensors(torch.float32), bogus_option=1)
    msg = str(err.value)
    assert "bogus_option" in msg and method in msg
    allowed = criteria.get(method).options
    for opt in allowed:
        assert opt in msg
    if not allowed:
        assert "none" in msg


def test_magnitude_equals_abs_weight():
    model = _model(torch.float64)
    s = sciprune.scores(model, "magnitude")
    for n, p in model.named_parameters():
        if n in s:
            assert torch.equal(s[n], p.detach().abs())
            assert s[n].dtype == torch.float64


def test_magnitude_of_masked_model_is_zero_where_pruned():
    model = _model()
    set_masks(model, {"linear1.weight": torch.rand(6, 8, generator=torch.Generator().manual_seed(0)) > 0.5})
    s = sciprune.scores(model, "magnitude")
    m = get_masks(model)["linear1.weight"]
    assert bool((s["linear1.weight"][~m] == 0).all()) and bool((s["linear1.weight"][m] > 0).all())


def test_random_differs_between_seeds_and_is_uniform():
    model = _model()
    a = sciprune.scores(model, "random", seed=0)
    b = sciprune.scores(model, "random", seed=1)
    for n in a:
        assert not torch.equal(a[n], b[n])
    flat = torch.cat([t.flatten() for t in a.values()])
    assert bool(((flat >= 0) & (flat < 1)).all())
    # different layers get different draws
    assert not torch.equal(a["linear0.weight"].flatten()[:6], a["linear1.weight"].flatten()[:6])
