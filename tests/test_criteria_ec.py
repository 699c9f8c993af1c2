"""Elimination-compensation and its companions against dense float64 references.

References are built from per-sample parameter Jacobians (``torch.func.jacrev`` of the output with
respect to every weight and bias) and the paper's definitions (Ballini et al., arXiv 2602.20467,
Sec. 3) directly, not the per-neuron simplification the library uses; ``ec-exact`` is compared with
a Python loop that deep-copies the model for every weight.
"""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from torch.func import functional_call, jacrev, vmap

import sciprune
from sciprune.batches import as_batches
from sciprune.criteria.ec import compensation_shifts, ec_statistics
from sciprune.errors import SciPruneError
from sciprune.masks import get_masks, prunable_names
from sciprune.models import linear_chain
from sciprune.pruning import score_result

F64 = torch.float64

# name, in, widths, out, activation
CASES = [
    ("tanh-1h-1", 3, [6], 1, "tanh"),
    ("relu-2h-3", 2, [7, 5], 3, "relu"),
    ("gelu-3h-1", 3, [5, 4, 6], 1, "gelu"),
    ("sin-2h-3", 2, [5, 6], 3, "sin"),
    ("tanh-3h-3", 2, [4, 5, 4], 3, "tanh"),
]
IDS = [c[0] for c in CASES]


def _problem(case, n=60, seed=0, dtype=F64):
    _, n_in, widths, n_out, act = case
    model = sciprune.MLP(n_in, widths, n_out, act, seed=seed).to(dtype)
    g = torch.Generator().manual_seed(seed + 100)
    X = torch.randn(n, n_in, generator=g, dtype=F64).to(dtype)
    Y = torch.randn(n, n_out, generator=g, dtype=F64).to(dtype)
    return model, X, Y


def _jacobians(model, X):
    """name -> per-sample Jacobian of the output, shape (N, K, *param.shape)."""
    params = {k: v.detach() for k, v in model.named_parameters()}

    def f(p, x):
        return functional_call(model, p, (x[None],))[0]

    return vmap(jacrev(f), in_dims=(None, 0))(params, X)


def _reference(model, X):
    """From the definitions: shift, importance, no-compensation score and the sums S0, S1, S2."""
    J = _jacobians(model, X)
    params = dict(model.named_parameters())
    N = X.shape[0]
    out = {}
    for name in prunable_names(model):
        W = params[name].detach()
        dW, db = J[name], J[name.replace("weight", "bias")]  # (N, K, out, in), (N, K, out)
        num = torch.einsum("nkoi,nko->oi", dW, db) / N  # E_x sum_k dy/dW dy/db
        den = torch.einsum("nko,nko->o", db, db) / N  # E_x sum_k (dy/db)^2
        shift = torch.where(den[:, None] > 0, W * num / torch.where(den > 0, den, 1.0)[:, None], 0.0)
        dy = dW * W - shift * db[..., None]
        out[name] = {
            "shift": shift,
            "I": (dy**2).sum(1).mean(0),
            "I0": ((dW * W) ** 2).sum(1).mean(0),
            "S0": den * N, "S1": num * N, "S2": torch.einsum("nkoi,nkoi->oi", dW, dW),
        }
    return out


def _batches(X, Y, batch_size=None):
    return as_batches((X, Y), dtype=X.dtype, batch_size=batch_size)


# --- closed forms against the Jacobian reference -------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("batch_size", [None, 7])
def test_ec_and_taylor_output_match_jacobian_reference(case, batch_size):
    model, X, Y = _problem(case)
    ref = _reference(model, X)
    res = score_result(model, "ec", (X, Y), batch_size=batch_size)
    taylor = sciprune.scores(model, "taylor-output", (X, Y), batch_size=batch_size)
    stats = ec_statistics(model, _batches(X, Y, batch_size), prunable_names(model))
    for name, r in ref.items():
        assert_close(res.scores[name], r["I"], what=f"{name} importance")
        assert_close(res.bias_shifts[name], r["shift"], what=f"{name} shift")
        assert_close(taylor[name], r["I0"], what=f"{name} taylor-output")
        s = stats[name]
        assert s.n == X.shape[0]
        for key in ("S0", "S1", "S2"):
            assert_close(getattr(s, key), r[key], what=f"{name} {key}")
        # compensation only removes error: I <= I0 (the shift 0 is a candidate of the minimum)
        assert bool((res.scores[name] <= r["I0"] + 1e-12 * float(r["I0"].max())).all())


def test_names_subset_matches_full():
    model, X, Y = _problem(CASES[4])
    full = score_result(model, "ec", (X, Y))
    part = score_result(model, "ec", (X, Y), names=["linear2.weight"])
    assert list(part.scores) == ["linear2.weight"]
    assert_close(part.scores["linear2.weight"], full.scores["linear2.weight"], rtol=1e-13)
    assert_close(part.bias_shifts["linear2.weight"], full.bias_shifts["linear2.weight"], rtol=1e-13)


def test_float32_agrees_with_float64():
    """Centred products keep float32 accurate even for saturated tanh neurons (a near +-1)."""
    model, X, Y = _problem(CASES[4], n=3000)
    with torch.no_grad():
        for lin in linear_chain(model):
            lin.weight.mul_(3.0)
    r64 = score_result(model, "ec", (X, Y))
    r32 = score_result(copy.deepcopy(model).float(), "ec", (X.float(), Y.float()), batch_size=1000)
    for name in r64.scores:
        assert_close(r32.scores[name], r64.scores[name], rtol=2e-5, what=f"{name} float32 importance")
        assert_close(r32.bias_shifts[name], r64.bias_shifts[name], rtol=2e-5, what=f"{name} float32 shift")


# --- random probes -------------------------------------------------------------------------------


@pytest.mark.parametrize("distribution", ["rademacher", "gaussian"])
def test_probe_statistics_are_unbiased(distribution):
    model, X, Y = _problem(CASES[3], n=30)  # three outputs
    names = prunable_names(model)
    exact = ec_statistics(model, _batches(X, Y), names)
    draws = {n: {k: [] for k in ("S0", "S1", "S2")} for n in names}
    for seed in range(400):
        est = ec_statistics(model, _batches(X, Y), names, torch.Generator().manual_seed(seed), probes=2,
                            distribution=distribution)
        for n in names:
            for k in ("S0", "S1", "S2"):
                draws[n][k].append(getattr(est[n], k))
    for n in names:
        for k in ("S0", "S1", "S2"):
            d = torch.stack(draws[n][k])
            mean, sem = d.mean(0), d.std(0) / math.sqrt(d.shape[0])
            ref = getattr(exact[n], k)
            z = (mean - ref).abs() / (sem + 1e-12 * ref.abs().max())
            assert float(z.max()) < 5.0, f"{n} {k}: estimate off by {float(z.max()):.1f} standard errors"
            # random for the hidden layers with K = 3 (at the output layer, Rademacher G = v_i^2 = 1 exactly)
            assert (float(sem.max()) > 0) is (n != names[-1] or distribution == "gaussian"), (n, k)


def test_probe_scores_converge_with_many_probes():
    model, X, Y = _problem(CASES[3], n=30)
    exact = score_result(model, "ec", (X, Y))
    est = score_result(model, "ec", (X, Y), probes=4000, seed=1)
    for n in exact.scores:
        assert_close(est.scores[n], exact.scores[n], rtol=0.1, what=f"{n} probes=4000")


def test_one_rademacher_probe_is_exact_for_one_output():
    model, X, Y = _problem(CASES[2])  # one output: (v g)^2 = g^2 for v = +-1
    exact = score_result(model, "ec", (X, Y))
    est = score_result(model, "ec", (X, Y), probes=1, seed=3)
    for n in exact.scores:
        assert_close(est.scores[n], exact.scores[n], rtol=1e-12)
        assert_close(est.bias_shifts[n], exact.bias_shifts[n], rtol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_probes_rejected(bad):
    model, X, Y = _problem(CASES[0])
    with pytest.raises(SciPruneError, match="probes must be"):
        sciprune.scores(model, "ec", (X, Y), probes=bad)


# --- the linearisation and the compensation ------------------------------------------------------


def _true_change(model, X, name, i, j, shift):
    """E_x sum_k (y - y')^2 after zeroing W_ij and adding ``shift`` to b_i, by a plain forward pass."""
    other = copy.deepcopy(model)
    p = dict(other.named_parameters())
    with torch.no_grad():
        p[name][i, j] = 0.0
        p[name.replace("weight", "bias")][i] += shift
        return float(((model(X) - other(X)) ** 2).sum(1).mean())


SMOOTH = [c for c in CASES if c[4] != "relu"]  # the expansion needs a twice-differentiable activation


@pytest.mark.parametrize("case", SMOOTH, ids=[c[0] for c in SMOOTH])
def test_true_change_approaches_importance_as_weight_shrinks(case):
    """Scale W_ij by eps: (true change after compensation) / I -> 1 and |true - I| = O(eps^3)."""
    model, X, Y = _problem(case)
    name, (i, j) = "linear0.weight", (1, 1)
    residuals = []
    for eps in (0.1, 0.05, 0.025, 0.0125):
        m = copy.deepcopy(model)
        with torch.no_grad():
            dict(m.named_parameters())[name][i, j] *= eps
        res = score_result(m, "ec", (X, Y))
        I = float(res.scores[name][i, j])
        true = _true_change(m, X, name, i, j, float(res.bias_shifts[name][i, j]))
        residuals.append((I, abs(true - I)))
    rel = [r / I for I, r in residuals]
    assert rel[-1] < 0.01 and rel == sorted(rel, reverse=True), rel
    orders = [math.log2(a[1] / b[1]) for a, b in itertools.pairwise(residuals)]
    # at least cubic; exactly cubic here except for the one-layer tanh net on symmetric data, whose
    # cubic coefficient E[t' t'' delta^3] nearly cancels (order ~4)
    assert all(q > 2.8 for q in orders), f"residual orders {orders}"
    if case[0] != "tanh-1h-1":
        assert 2.8 < orders[-1] < 3.2, f"residual orders {orders} (expected 3)"


def test_output_layer_linearisation_is_exact():
    model, X, Y = _problem(CASES[3])
    res = score_result(model, "ec", (X, Y))
    name = "linear2.weight"
    for i, j in [(0, 0), (2, 3), (1, 5)]:
        true = _true_change(model, X, name, i, j, float(res.bias_shifts[name][i, j]))
        assert true == pytest.approx(float(res.scores[name][i, j]), rel=1e-10)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_summed_shift_never_raises_the_linearised_error(case):
    """Per row, E[sum_k (sum_{j removed} dy_k/dW_ij W_ij - dy_k/db_i db)^2] with db = the summed
    shifts is at most its value with db = 0, for random removal sets in every layer."""
    model, X, Y = _problem(case)
    J = _jacobians(model, X)
    res = score_result(model, "ec", (X, Y))
    g = torch.Generator().manual_seed(5)
    params = dict(model.named_parameters())
    for name in prunable_names(model):
        W = params[name].detach()
        dW, db = J[name], J[name.replace("weight", "bias")]
        for _ in range(10):
            removed = torch.rand(W.shape, generator=g, dtype=F64) < 0.5
            r = (dW * (W * removed)).sum(-1)  # (N, K, out): linearised change of the removals
            shift = (res.bias_shifts[name] * removed).sum(1)  # (out,)
            with_shift = ((r - db * shift) ** 2).sum(1).mean(0)
            without = (r**2).sum(1).mean(0)
            assert bool((with_shift <= without + 1e-12 * float(without.max())).all()), name
            assert float(with_shift.sum()) < float(without.sum()) or float(without.sum()) == 0.0  # it helps


@pytest.mark.parametrize("case", [CASES[1], CASES[4]], ids=[IDS[1], IDS[4]])
def test_summed_shifts_are_the_joint_least_squares_shift(case):
    model, X, Y = _problem(case)
    J = _jacobians(model, X)
    res = score_result(model, "ec", (X, Y))
    g = torch.Generator().manual_seed(7)
    params = dict(model.named_parameters())
    for name in prunable_names(model):
        W = params[name].detach()
        dW, db = J[name], J[name.replace("weight", "bias")]
        for i in range(W.shape[0]):
            removed = torch.rand(W.shape[1], generator=g, dtype=F64) < 0.6
            target = (dW[:, :, i, :] * (W[i] * removed)).sum(-1).reshape(-1, 1)  # (N K, 1)
            A = db[:, :, i].reshape(-1, 1)
            if float(A.abs().max()) == 0.0:
                continue
            joint = torch.linalg.lstsq(A, target).solution.item()
            assert (res.bias_shifts[name][i] * removed).sum().item() == pytest.approx(joint, rel=1e-10, abs=1e-14)


# --- dead neurons --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["relu-never-active", "zero-outgoing"])
def test_dead_neuron_gets_zero_importance_and_shift(how):
    model, X, Y = _problem(CASES[1])  # relu, 2 -> 7 -> 5 -> 3
    with torch.no_grad():
        if how == "relu-never-active":
            model.linear0.bias[3] = -1e3  # z < 0 on all data: dy/dz = 0
            dead = ("linear0.weight", 3)
        else:
            model.linear2.weight[:, 2] = 0.0  # nothing leaves neuron 2 of the second hidden layer
            dead = ("linear1.weight", 2)
    for method in ("ec", "taylor-output", "ec-exact"):
        res = score_result(model, method, (X, Y))
        for name, s in res.scores.items():
            assert bool(torch.isfinite(s).all()), (method, name)
        name, row = dead
        if method != "ec-exact" or how == "zero-outgoing":
            assert bool((res.scores[name][row] == 0).all()), (method, res.scores[name][row])
        if res.bias_shifts is not None:
            assert bool((res.bias_shifts[name][row] == 0).all())
            assert all(bool(torch.isfinite(t).all()) for t in res.bias_shifts.values())
    ref = _reference(model, X)
    ec = score_result(model, "ec", (X, Y))
    for name in ref:
        assert_close(ec.scores[name], ref[name]["I"], what=name)
    rep = sciprune.prune(model, "ec", 0.5, (X, Y))
    assert rep.compensated and all(bool(torch.isfinite(p).all()) for p in model.parameters())


# --- gradient ------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [None, 7])
def test_gradient_is_abs_weight_times_full_batch_gradient(batch_size):
    model, X, Y = _problem(CASES[4])
    s = sciprune.scores(model, "gradient", (X, Y), batch_size=batch_size)
    m = copy.deepcopy(model)
    F.mse_loss(m(X), Y).backward()
    for name, p in m.named_parameters():
        if name in s:
            assert_close(s[name], (p.detach() * p.grad).abs(), rtol=1e-12, what=name)


def test_gradient_uses_cross_entropy_for_integer_labels():
    model, X, _ = _problem(CASES[1])
    labels = torch.randint(0, 3, (X.shape[0],), generator=torch.Generator().manual_seed(0))
    s = sciprune.scores(model, "gradient", (X, labels), batch_size=13)
    m = copy.deepcopy(model)
    F.cross_entropy(m(X), labels).backward()
    for name, p in m.named_parameters():
        if name in s:
            assert_close(s[name], (p.detach() * p.grad).abs(), rtol=1e-12, what=name)


# --- ec-exact ------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["tanh", "relu", "sin"])
@pytest.mark.parametrize("batch_size", [None, 7])
def test_ec_exact_equals_a_loop_over_weights(act, batch_size):
    model, X, Y = _problem(("tiny", 2, [3, 4], 2, act), n=20)
    res = score_result(model, "ec-exact", (X, Y), batch_size=batch_size)
    ec = score_result(model, "ec", (X, Y))
    for name in prunable_names(model):
        assert_close(res.bias_shifts[name], ec.bias_shifts[name], rtol=1e-13, what=f"{name} shift")
        ref = torch.zeros_like(res.scores[name])
        for i in range(ref.shape[0]):
            for j in range(ref.shape[1]):
                ref[i, j] = _true_change(model, X, name, i, j, float(ec.bias_shifts[name][i, j]))
        assert_close(res.scores[name], ref, rtol=1e-10, what=f"{name} ec-exact")


@pytest.mark.parametrize("batch_size", [None, 6])
def test_ec_exact_examples_measures_the_change_on_the_drawn_rows(batch_size):
    """``examples = k``: the true change over the k rows ``drawn_rows`` keeps for the seed, with the EC
    shifts of all rows; k at least the data gives the default."""
    from sciprune.criteria._loss_models import drawn_rows

    model, X, Y = _problem(("tiny", 2, [3, 4], 2, "tanh"), n=20)
    res = score_result(model, "ec-exact", (X, Y), batch_size=batch_size, seed=3, examples=7)
    ec = score_result(model, "ec", (X, Y))
    keep = drawn_rows(20, 7, torch.Generator().manual_seed(3))
    for name in prunable_names(model):
        assert_close(res.bias_shifts[name], ec.bias_shifts[name], rtol=1e-13, what=f"{name} shift")
        ref = torch.zeros_like(res.scores[name])
        for i in range(ref.shape[0]):
            for j in range(ref.shape[1]):
                ref[i, j] = _true_change(model, X[keep], name, i, j, float(ec.bias_shifts[name][i, j]))
        assert_close(res.scores[name], ref, rtol=1e-10, what=f"{name} ec-exact on 7 rows")
    full = score_result(model, "ec-exact", (X, Y), seed=3)
    for k in (20, 50):
        same = score_result(model, "ec-exact", (X, Y), seed=3, examples=k)
        for name in prunable_names(model):
            assert torch.equal(same.scores[name], full.scores[name])
    with pytest.raises(SciPruneError, match="examples"):
        score_result(model, "ec-exact", (X, Y), examples=0)


def test_ec_exact_on_float32_model_and_last_layer_equals_ec():
    model, X, Y = _problem(CASES[4], dtype=torch.float32)
    exact = score_result(model, "ec-exact", (X, Y))
    ec = score_result(model.double(), "ec", (X.double(), Y.double()))
    # the output layer is linear in its weights and biases: the true change is the importance
    assert_close(exact.scores["linear3.weight"], ec.scores["linear3.weight"], rtol=1e-5)


def test_ec_exact_refuses_large_models_unless_allowed():
    model, X, Y = _problem(CASES[1])
    n = sum(p.numel() for n_, p in model.named_parameters() if n_.endswith("weight"))
    with pytest.raises(SciPruneError, match=f"max_weights={n}"):
        sciprune.scores(model, "ec-exact", (X, Y), max_weights=10)
    assert set(sciprune.scores(model, "ec-exact", (X, Y), max_weights=n)) == set(prunable_names(model))


# --- prune(..., compensate=...) -----------------------------------------------------------------


def _biases(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("bias")}


def _expected_biases(before, shifts, removed):
    out = dict(before)
    for name, s in shifts.items():
        b = name.replace("weight", "bias")
        out[b] = before[b] + (s * removed[name]).sum(1).to(before[b].dtype)
    return out


@pytest.mark.parametrize("method,compensate,expect", [
    ("ec", None, True), ("ec", True, True), ("ec", False, False), ("ec-exact", None, True),
    ("magnitude", None, False), ("magnitude", True, True), ("random", True, True), ("gradient", False, False),
])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_prune_compensate(method, compensate, expect, scope):
    model, X, Y = _problem(CASES[4])
    res = score_result(model, method, (X, Y), seed=2)
    shifts = res.bias_shifts or compensation_shifts(model, _batches(X, Y), prunable_names(model))
    before_b, before_m = _biases(model), get_masks(model)
    rep = sciprune.prune(model, method, 0.4, (X, Y), scope=scope, compensate=compensate, seed=2)
    assert rep.compensated is expect
    after_m = get_masks(model)
    if scope == "global":
        assert rep.pruned == math.floor(0.4 * rep.total + 0.5)
    else:
        for n, m in after_m.items():
            assert int((~m).sum()) == math.floor(0.4 * m.numel() + 0.5)
    removed = {n: before_m[n] & ~after_m[n] for n in after_m}
    expected = _expected_biases(before_b, shifts, removed) if expect else before_b
    for n, b in _biases(model).items():
        assert_close(b, expected[n], rtol=1e-14, what=n)
        if not expect:
            assert torch.equal(b, before_b[n])


def test_compensation_of_a_masked_model_shifts_only_for_the_new_removals():
    model, X, Y = _problem(CASES[4])
    sciprune.prune(model, "magnitude", 0.3)
    before_b, before_m = _biases(model), get_masks(model)
    shifts = compensation_shifts(model, _batches(X, Y), prunable_names(model))
    rep = sciprune.prune(model, "magnitude", 0.6, (X, Y), compensate=True)
    after_m = get_masks(model)
    removed = {n: before_m[n] & ~after_m[n] for n in after_m}
    assert all(bool((before_m[n] | ~after_m[n]).all()) for n in after_m)  # masks only shrink
    expected = _expected_biases(before_b, shifts, removed)
    for n, b in _biases(model).items():
        assert_close(b, expected[n], rtol=1e-14, what=n)
    assert rep.achieved == pytest.approx(0.6, abs=0.01)


def test_compensate_needs_data_and_a_bias():
    model, X, Y = _problem(CASES[0])
    with pytest.raises(SciPruneError, match="compensate=True .* data"):
        sciprune.prune(model, "magnitude", 0.5, compensate=True)
    with pytest.raises(SciPruneError, match="compensate must be"):
        sciprune.prune(model, "magnitude", 0.5, (X, Y), compensate="yes")
    nobias = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1, bias=False)).double()
    state = copy.deepcopy(nobias.state_dict())
    with pytest.raises(SciPruneError, match="needs a bias"):
        sciprune.prune(nobias, "ec", 0.5, (X, Y))
    for k, v in nobias.state_dict().items():
        assert torch.equal(v, state[k]), f"{k} changed by a failed prune"
    assert not any(n.endswith("_mask") for n, _ in nobias.named_buffers())
    rep = sciprune.prune(nobias, "ec", 0.5, (X, Y), compensate=False)
    assert not rep.compensated


def test_fine_tuning_after_compensated_pruning_keeps_the_mask():
    model, X, Y = _problem(CASES[4])
    sciprune.prune(model, "ec", 0.7, (X, Y))
    masks = get_masks(model)
    biases = _biases(model)
    sciprune.fit(model, (X, Y), sciprune.TrainConfig(epochs=20, lr=1e-2))
    params = dict(model.named_parameters())
    for n, m in masks.items():
        assert torch.equal(get_masks(model)[n], m)
        assert bool((params[n][~m] == 0).all())
    assert any(not torch.equal(b, biases[n]) for n, b in _biases(model).items())  # biases train


def test_chain_errors_are_clear():
    X, Y = torch.randn(10, 3, dtype=F64), torch.randn(10, 2, dtype=F64)
    soft = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Softmax(dim=1), torch.nn.Linear(4, 2)).double()
    with pytest.raises(SciPruneError, match="not an elementwise activation"):
        sciprune.scores(soft, "ec", (X, Y))
    with pytest.raises(SciPruneError, match="nn.Sequential"):
        sciprune.scores(torch.nn.Linear(3, 2).double(), "ec", (X, Y))
