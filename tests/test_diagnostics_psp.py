"""PSP norms and PSP-entropy against plain counting in Python, on tiny float64 networks."""

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch import nn

import sciprune
from sciprune.diagnostics import psp_entropy, psp_norms
from sciprune.diagnostics.plots import plot_entropy_histograms
from sciprune.errors import SciPruneError
from sciprune.masks import set_masks
from sciprune.results import read_dataset, write_dataset


def _close(a, b, *, rtol=1e-12, atol=1e-12, what=""):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    bad = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    assert not bad.any(), f"{what}: differ at {np.argwhere(bad)[:5].tolist()}: {a[bad][:5]} vs {b[bad][:5]}"


@torch.no_grad()
def _psps(model, X):
    """Pre-activations of the hidden layers, written out layer by layer."""
    lins = [m for m in model if isinstance(m, nn.Linear)]
    acts = [m for m in model if not isinstance(m, nn.Linear)]
    zs, a = [], X
    for lin, act in zip(lins[:-1], acts):
        z = a @ lin.weight.T + lin.bias
        zs.append(z)
        a = act(z.clone())
    return zs


def _ref_entropies(z, labels, K):
    """Per-neuron and per-pair entropies by counting states in Python (0 log 0 = 0)."""
    on = (z > 0).tolist()
    labels = [int(v) for v in labels]
    w = len(on[0])

    def H(counter, n):
        return -sum(k / n * math.log2(k / n) for k in counter.values() if k)

    H1 = np.zeros(w)
    H2 = np.zeros((w, w))
    for c in range(K):
        rows = [r for r in range(len(labels)) if labels[r] == c]
        if not rows:
            continue
        for i in range(w):
            H1[i] += H(Counter(on[r][i] for r in rows), len(rows))
            for j in range(w):
                H2[i, j] += H(Counter((on[r][i], on[r][j]) for r in rows), len(rows))
    return H1, H2


@pytest.fixture
def problem():
    torch.manual_seed(0)
    model = sciprune.MLP(4, [6, 5], 3, "relu", seed=0).double()
    with torch.no_grad():
        model.linear0.weight[2].zero_()  # neuron 2 always off: z = -1
        model.linear0.bias[2] = -1.0
        model.linear0.weight[4].zero_()  # neuron 4 always on: z = 0.5
        model.linear0.bias[4] = 0.5
    X = torch.randn(40, 4, dtype=torch.float64)
    Y = torch.tensor([0] * 20 + [1] * 19 + [2])  # class 2 has a single sample
    Y = Y[torch.randperm(40)]
    return model, X, Y


def test_entropies_match_counting(problem):
    model, X, Y = problem
    ds = psp_entropy(model, (X, Y))
    assert list(ds["layer"].values) == ["linear0", "linear1"]
    assert ds["class_count"].values.tolist() == [20, 19, 1]
    for name, z in zip(["linear0", "linear1"], _psps(model, X)):
        H1, H2 = _ref_entropies(z, Y, 3)
        _close(ds[f"entropy_{name}"], H1, what=f"H1 {name}")
        _close(ds[f"pair_entropy_{name}"], H2, what=f"H2 {name}")
        _close(ds[f"psp_sq_{name}"], (z**2).mean(0), what=f"z^2 {name}")
        iu = np.triu_indices(z.shape[1], 1)
        _close(ds["mean_pair_entropy"].sel(layer=name), H2[iu].mean())
        _close(ds["mean_entropy"].sel(layer=name), H1.mean())
        _close(ds["class_entropy_" + name].sum("class"), H1)
    h = ds["entropy_linear0"].values
    assert h[2] == 0.0 and h[4] == 0.0 and np.isfinite(ds["pair_entropy_linear0"].values).all()
    assert ds["on_fraction_linear0"].sel(neuron_linear0=4).values.tolist() == [1.0, 1.0, 1.0]
    # the single-sample class never adds entropy: its state is certain
    assert (ds["class_entropy_linear1"].sel({"class": 2}).values == 0).all()
    # the diagonal of the pair matrix is the first-order entropy
    _close(np.diag(ds["pair_entropy_linear1"].values), ds["entropy_linear1"].values)


def test_empty_class_adds_nothing_and_has_nan_fraction(problem):
    model, X, Y = problem
    ds = psp_entropy(model, (X, Y), classes=5)
    ref = psp_entropy(model, (X, Y))
    assert ds["class_count"].values.tolist() == [20, 19, 1, 0, 0]
    _close(ds["entropy_linear1"], ref["entropy_linear1"])
    _close(ds["pair_entropy_linear1"], ref["pair_entropy_linear1"])
    assert np.isnan(ds["on_fraction_linear0"].sel({"class": 4}).values).all()
    with pytest.raises(SciPruneError, match=r"labels must lie in \[0, 2\)"):
        psp_entropy(model, (X, Y), classes=2)


def test_batching_and_iterables_do_not_change_the_result(problem):
    model, X, Y = problem
    full = psp_entropy(model, (X, Y))
    for other in (psp_entropy(model, (X, Y), batch_size=7),
                  psp_entropy(model, [(X[s : s + 9], Y[s : s + 9]) for s in range(0, 40, 9)])):
        for v in full.data_vars:
            _close(other[v], full[v], what=v)


def test_orders(problem):
    model, X, Y = problem
    one = psp_entropy(model, (X, Y), order=(1,))
    two = psp_entropy(model, (X, Y), order=[2])
    assert "entropy_linear0" in one and "pair_entropy_linear0" not in one and "mean_pair_entropy" not in one
    assert "pair_entropy_linear0" in two and "entropy_linear0" not in two
    for bad in ((), (3,), (1, 3), 2):
        with pytest.raises(SciPruneError, match="order must be"):
            psp_entropy(model, (X, Y), order=bad)


def test_regression_targets_make_equal_count_quantile_classes():
    torch.manual_seed(1)
    model = sciprune.MLP(2, [5], 1, "relu", seed=3).double()
    X = torch.randn(40, 2, dtype=torch.float64)
    Y = torch.randn(40, 1, dtype=torch.float64)
    ds = psp_entropy(model, (X, Y), n_bins=4)
    assert ds.attrs["classes"] == "quantile_bins" and ds["class_count"].values.tolist() == [10] * 4
    ranks = torch.argsort(torch.argsort(Y[:, 0]))
    labels = (ranks * 4) // 40  # the 10 smallest are class 0, ...
    H1, H2 = _ref_entropies(_psps(model, X)[0], labels, 4)
    _close(ds["entropy_linear0"], H1)
    _close(ds["pair_entropy_linear0"], H2)
    lower, upper = ds["class_lower"].values, ds["class_upper"].values
    assert lower[0] == -np.inf and upper[-1] == np.inf and (lower[1:] == upper[:-1]).all()
    # unequal N: counts differ by at most one; bins from the whole data set also through an iterable
    Y2 = torch.randn(43, 2, dtype=torch.float64)
    X2 = torch.randn(43, 2, dtype=torch.float64)
    a = psp_entropy(model, (X2, Y2), n_bins=4)
    b = psp_entropy(model, [(X2[:20], Y2[:20]), (X2[20:], Y2[20:])], n_bins=4)
    assert np.ptp(a["class_count"].values) <= 1 and a["class_count"].sum() == 43
    for v in a.data_vars:
        _close(b[v], a[v], what=v)
    # integer labels can be binned on request; float targets cannot be labels
    assert psp_entropy(model, (X, torch.arange(40)), classes="bins", n_bins=5)["class_count"].values.tolist() == [8] * 5
    with pytest.raises(SciPruneError, match="needs integer labels"):
        psp_entropy(model, (X, Y), classes=3)
    with pytest.raises(SciPruneError, match="n_bins must be"):
        psp_entropy(model, (X, Y), n_bins=0)


def test_tanh_model_is_refused_but_has_psp_norms():
    model = sciprune.MLP(3, [4, 4], 2, "tanh", seed=0).double()
    X, Y = torch.randn(10, 3, dtype=torch.float64), torch.randint(0, 2, (10,))
    with pytest.raises(SciPruneError, match="PSP-entropy needs ReLU hidden layers; model has activations tanh"):
        psp_entropy(model, (X, Y))
    ds = psp_norms(model, (X, Y), batch_size=3)
    for name, z in zip(["linear0", "linear1"], _psps(model, X)):
        _close(ds[f"psp_sq_{name}"], (z**2).mean(0))
        _close(ds["mean_psp_sq"].sel(layer=name), (z**2).mean())
    assert list(ds["activation"].values) == ["tanh", "tanh"]


def test_hand_built_chains_inplace_relu_and_mixed_activations():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 5), nn.ReLU(inplace=True), nn.Linear(5, 2)).double()
    X, Y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 2, (30,))
    ds = psp_entropy(model, (X, Y))
    assert list(ds["layer"].values) == ["2"]  # only the ReLU layer
    z = _psps(model, X)[1]
    _close(ds["psp_sq_2"], (z**2).mean(0))  # the in-place ReLU did not clip the kept PSPs
    _close(ds["entropy_2"], _ref_entropies(z, Y, 2)[0])
    assert list(psp_norms(model, (X, Y))["layer"].values) == ["0", "2"]


def test_pruned_model_is_measured_with_its_zeroed_weights(problem):
    model, X, Y = problem
    masks = {"linear0.weight": torch.rand(6, 4, generator=torch.Generator().manual_seed(0)) > 0.5}
    set_masks(model, masks)
    ds = psp_entropy(model, (X, Y))
    with torch.no_grad():
        z = X @ (model.linear0.weight * masks["linear0.weight"]).T + model.linear0.bias
    _close(ds["entropy_linear0"], _ref_entropies(z, Y, 3)[0])


def test_result_round_trips_and_plots(problem, tmp_path):
    model, X, Y = problem
    ds = psp_entropy(model, (X, Y))
    back = read_dataset(write_dataset(ds, tmp_path / "psp.nc"))
    _close(back["pair_entropy_linear0"], ds["pair_entropy_linear0"])
    other = psp_entropy(sciprune.MLP(4, [6, 5], 3, "relu", seed=5).double(), (X, Y))
    for arg in (ds, {"A": ds, "B": other}):
        p = plot_entropy_histograms(arg, tmp_path / "h.png")
        assert p.stat().st_size > 1000
        p.unlink()
