"""sciprune.curvature against dense float64 references (BackPACK-style pairs).

References never use the library's loss scaling or factorisations: the Hessian of the data-set loss
is ``torch.func.hessian`` of ``F.mse_loss`` / ``F.cross_entropy`` over the flattened parameters; the
GGN is ``J^T H_y J`` with ``J`` from ``jacrev`` of all outputs and ``H_y`` the Hessian of the same loss
with respect to all outputs; K-FAC factors are summed sample by sample in a Python loop.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close
from torch import nn
from torch.func import functional_call, hessian, jacrev

import sciprune
from sciprune import curvature as cv
from sciprune.errors import SciPruneError
from sciprune.masks import set_masks

F64 = torch.float64

# torch's forward-mode AD scripts its own decompositions on first use (torch internals, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# name, in, widths, out, activation, loss
CASES = [
    ("tanh-1h-1-mse", 3, [6], 1, "tanh", "mse"),
    ("relu-2h-3-mse", 2, [5, 4], 3, "relu", "mse"),
    ("tanh-2h-3-ce", 3, [5, 4], 3, "tanh", "cross_entropy"),
    ("relu-1h-3-ce", 4, [6], 3, "relu", "cross_entropy"),
    ("tanh-3h-1-mse", 2, [4, 5, 3], 1, "tanh", "mse"),
]
IDS = [c[0] for c in CASES]


def _problem(case, n=40, seed=0):
    _, n_in, widths, n_out, act, loss = case
    model = sciprune.MLP(n_in, widths, n_out, act, seed=seed).to(F64)
    g = torch.Generator().manual_seed(seed + 7)
    X = torch.randn(n, n_in, generator=g, dtype=F64)
    if loss == "mse":
        Y = torch.randn(n, n_out, generator=g, dtype=F64)
    else:
        Y = torch.randint(0, n_out, (n,), generator=g)
    return model, X, Y, loss


def _loss(loss, y, Y):
    return F.mse_loss(y, Y) if loss == "mse" else F.cross_entropy(y, Y)


def _flat_fn(model, names):
    """theta (flat over ``names``, full) -> params dict, and the current theta."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    names = names or list(params)
    sizes = [params[n].numel() for n in names]

    def to_params(theta):
        p = dict(params)
        for n, part in zip(names, torch.split(theta, sizes)):
            p[n] = part.reshape(params[n].shape)
        return p

    return to_params, torch.cat([params[n].reshape(-1) for n in names])


def dense_hessian(model, X, Y, loss, names=None):
    to_params, theta = _flat_fn(model, names)
    return hessian(lambda t: _loss(loss, functional_call(model, to_params(t), (X,)), Y))(theta)


def dense_ggn(model, X, Y, loss, names=None):
    to_params, theta = _flat_fn(model, names)
    J = jacrev(lambda t: functional_call(model, to_params(t), (X,)))(theta)  # (N, C, D)
    y = model(X).detach()
    Hy = hessian(lambda yy: _loss(loss, yy, Y))(y)  # (N, C, N, C)
    N, C, D = J.shape
    Jf = J.reshape(N * C, D)
    return Jf.T @ Hy.reshape(N * C, N * C) @ Jf


def kept_index(model, names=None):
    """Kept positions in the concatenation of the named parameters, from the mask buffers."""
    keep = []
    for n, p in model.named_parameters():
        if names is not None and n not in names:
            continue
        mod, _, attr = n.rpartition(".")
        m = model.get_submodule(mod)._buffers.get(f"{attr}_mask")
        keep.append(torch.ones(p.numel(), dtype=torch.bool) if m is None else m.reshape(-1))
    return torch.nonzero(torch.cat(keep), as_tuple=True)[0]


def _masked(model, frac=0.4, seed=3):
    g = torch.Generator().manual_seed(seed)
    set_masks(model, {n: torch.rand(p.shape, generator=g) > frac
                      for n, p in model.named_parameters() if n.endswith("weight")})
    return model


# --- ParamSpace -------------------------------------------------------------------------------

def test_space_selection_masks_and_round_trip():
    model, *_ = _problem(CASES[1])
    sp = cv.ParamSpace(model, ["linear2", "linear0.bias"])
    assert sp.names == ("linear0.bias", "linear2.weight", "linear2.bias")
    assert sp.dim == 5 + 12 + 3
    _masked(model)
    sp = cv.ParamSpace(model)
    idx = kept_index(model)
    assert sp.dim == idx.numel()
    assert torch.equal(sp.flat_index(), idx)
    v = torch.randn(sp.dim, dtype=F64)
    d = sp.unflatten(v)
    assert torch.equal(sp.flatten(d), v)
    for n, p in model.named_parameters():
        if n.endswith("weight"):
            assert bool((d[n][~sciprune.get_masks(model)[n]] == 0).all())


# --- products -----------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hvp_and_ggnvp_match_dense(case):
    model, X, Y, loss = _problem(case)
    H, G = dense_hessian(model, X, Y, loss), dense_ggn(model, X, Y, loss)
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1), dtype=F64)
    assert_close(cv.hvp(model, (X, Y), v, loss=loss), H @ v, what="Hv")
    assert_close(cv.ggnvp(model, (X, Y), v, loss=loss), G @ v, what="Gv")
    # name-keyed in and out; a stack through vmap; batching changes nothing
    sp = cv.ParamSpace(model)
    d = cv.hvp(model, (X, Y), sp.unflatten(v), loss=loss, batch_size=7)
    assert set(d) == set(sp.names)
    assert_close(sp.flatten(d), H @ v, what="Hv dict, batch 7")
    V = torch.randn(5, H.shape[0], generator=torch.Generator().manual_seed(2), dtype=F64)
    op = cv.ggn_operator(model, (X, Y), loss=loss, batch_size=7)
    assert_close(op.torch_matmat(V), V @ G, what="G V")
    assert op.n_products == 5
    assert_close(torch.from_numpy(op @ V[0].numpy()), G @ V[0], what="scipy matvec")


def test_products_on_a_layer_and_with_masks():
    model, X, Y, loss = _problem(CASES[2])
    H = dense_hessian(model, X, Y, loss, names=["linear1.weight", "linear1.bias"])
    v = torch.randn(H.shape[0], dtype=F64)
    assert_close(cv.hvp(model, (X, Y), v, loss=loss, names="linear1"), H @ v, what="layer Hv")
    _masked(model)
    idx = kept_index(model)
    H, G = dense_hessian(model, X, Y, loss)[idx][:, idx], dense_ggn(model, X, Y, loss)[idx][:, idx]
    v = torch.randn(idx.numel(), dtype=F64)
    assert_close(cv.hvp(model, (X, Y), v, loss=loss), H @ v, what="masked Hv")
    assert_close(cv.ggnvp(model, (X, Y), v, loss=loss), G @ v, what="masked Gv")


def test_iterable_of_batches_and_no_side_effects():
    model, X, Y, loss = _problem(CASES[0])
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    v = torch.randn(cv.ParamSpace(model).dim, dtype=F64)
    whole = cv.hvp(model, (X, Y), v, loss=loss)
    batches = [(X[s : s + 9], Y[s : s + 9]) for s in range(0, X.shape[0], 9)]
    assert_close(cv.hvp(model, batches, v, loss=loss), whole, rtol=1e-12, what="iterable")
    assert model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- eigenpairs ---------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_top_eigenpairs_match_eigvalsh(case):
    model, X, Y, loss = _problem(case)
    H = dense_hessian(model, X, Y, loss)
    ref = torch.linalg.eigvalsh(H).flip(0)[:4].numpy()
    r = cv.top_eigenpairs(model, (X, Y), k=4, loss=loss, tol=1e-12, seed=1)
    np.testing.assert_allclose(r.values, ref, rtol=1e-6, atol=1e-10 * abs(ref[0]))
    assert np.all(r.residuals < 1e-6), r.residuals
    assert r.n_products > 0 and r.wall_s > 0 and r.vectors.shape == (4, H.shape[0])
    assert_close(r.vectors @ r.vectors.T, torch.eye(4, dtype=F64), rtol=1e-8, what="orthonormal")
    # the GGN is PSD: its top pairs by Lanczos, too
    G = dense_ggn(model, X, Y, loss)
    rg = cv.top_eigenpairs(model, (X, Y), k=3, loss=loss, matrix="ggn", tol=1e-12, batch_size=7)
    np.testing.assert_allclose(rg.values, torch.linalg.eigvalsh(G).flip(0)[:3].numpy(), rtol=1e-6)


def test_eigenpairs_on_a_layer_and_with_masks_and_lm():
    model, X, Y, loss = _problem(CASES[1])
    names = ["linear1.weight", "linear1.bias"]
    H = dense_hessian(model, X, Y, loss, names=names)
    r = cv.top_eigenpairs(model, (X, Y), k=3, loss=loss, names="linear1", tol=1e-12)
    np.testing.assert_allclose(r.values, torch.linalg.eigvalsh(H).flip(0)[:3].numpy(), rtol=1e-6)
    assert set(r.vector(0)) == set(names)
    _masked(model)
    idx = kept_index(model)
    ev = torch.linalg.eigvalsh(dense_hessian(model, X, Y, loss)[idx][:, idx]).numpy()
    r = cv.top_eigenpairs(model, (X, Y), k=3, loss=loss, tol=1e-12)
    np.testing.assert_allclose(r.values, ev[::-1][:3], rtol=1e-6)
    for i in range(3):  # eigenvectors vanish on pruned weights
        for n, m in sciprune.get_masks(model).items():
            assert bool((r.vector(i)[n][~m] == 0).all())
    lm = cv.top_eigenpairs(model, (X, Y), k=3, loss=loss, which="LM", tol=1e-12)
    ref = ev[np.argsort(-np.abs(ev))][:3]
    np.testing.assert_allclose(lm.values, ref, rtol=1e-6)


@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=[IDS[0], IDS[2]])
def test_power_iteration_agrees(case):
    model, X, Y, loss = _problem(case)
    ev = torch.linalg.eigvalsh(dense_ggn(model, X, Y, loss)).numpy()[::-1]
    r = cv.power_iteration_eigs(model, (X, Y), k=2, loss=loss, matrix="ggn", tol=1e-13, max_iter=5000, seed=2)
    assert all(r.converged)
    np.testing.assert_allclose(r.values, ev[:2], rtol=1e-6)
    lanczos = cv.top_eigenpairs(model, (X, Y), k=2, loss=loss, matrix="ggn", tol=1e-10)
    assert lanczos.n_products < r.n_products
    # a loose tolerance stops early and says so honestly
    short = cv.power_iteration_eigs(model, (X, Y), k=1, loss=loss, matrix="ggn", tol=0.0, max_iter=3)
    assert short.converged == (False,) and short.n_products == 3


# --- Hutchinson ---------------------------------------------------------------------------------

def test_hutchinson_exact_with_all_sign_vectors():
    model, X, Y, loss = _problem(CASES[2])
    names = ["linear1.bias"]  # 4 coordinates: 16 probes
    H = dense_hessian(model, X, Y, loss, names=names)
    Z = torch.tensor(list(itertools.product([-1.0, 1.0], repeat=4)), dtype=F64)
    est, _ = cv.hutchinson_trace(model, (X, Y), loss=loss, names=names, probes=Z, chunk=5)
    assert est == pytest.approx(float(torch.trace(H)), rel=1e-12)
    diag = cv.hutchinson_diagonal(model, (X, Y), loss=loss, names=names, probes=Z)
    assert_close(diag["linear1.bias"], torch.diagonal(H), rtol=1e-12, what="diag, all signs")


@pytest.mark.parametrize("matrix", ["hessian", "ggn"])
def test_hutchinson_is_unbiased_with_the_rademacher_variance(matrix):
    model, X, Y, loss = _problem(CASES[0])
    M = (dense_hessian if matrix == "hessian" else dense_ggn)(model, X, Y, loss)
    m = 1500
    est, se = cv.hutchinson_trace(model, (X, Y), loss=loss, matrix=matrix, n_samples=m, seed=5, chunk=500)
    exact = float(torch.trace(M))
    # Var(z^T M z) = 2 sum_{i != j} M_ij^2 for Rademacher z
    sd = float(torch.sqrt(2 * ((M**2).sum() - (torch.diagonal(M) ** 2).sum())))
    assert abs(est - exact) < 4 * sd / np.sqrt(m)
    assert se * np.sqrt(m) == pytest.approx(sd, rel=0.15)
    # seeded, and independent of how the probes are chunked
    a = cv.hutchinson_trace(model, (X, Y), loss=loss, matrix=matrix, n_samples=60, seed=5, chunk=60)
    b = cv.hutchinson_trace(model, (X, Y), loss=loss, matrix=matrix, n_samples=60, seed=5, chunk=7)
    assert a[0] == pytest.approx(b[0], rel=1e-12) and a[1] == pytest.approx(b[1], rel=1e-9)


# --- exact GGN diagonal and K-FAC ---------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_ggn_diagonal_matches_dense(case):
    model, X, Y, loss = _problem(case)
    sp = cv.ParamSpace(model)
    ref = torch.diagonal(dense_ggn(model, X, Y, loss))
    got = cv.ggn_diagonal(model, (X, Y), loss=loss)
    assert list(got) == list(sp.names)
    assert_close(sp.flatten(got), ref, what="diag GGN")
    assert_close(sp.flatten(cv.ggn_diagonal(model, (X, Y), loss=loss, batch_size=7)), ref, what="diag GGN, batch 7")
    part = cv.ggn_diagonal(model, (X, Y), loss=loss, names="linear1")
    assert set(part) == {"linear1.weight", "linear1.bias"}
    assert_close(part["linear1.weight"], got["linear1.weight"], rtol=1e-12, what="one layer")


def test_ggn_diagonal_with_masks_zeroes_pruned():
    model, X, Y, loss = _problem(CASES[3])
    _masked(model)
    idx = kept_index(model)
    got = cv.ggn_diagonal(model, (X, Y), loss=loss)
    sp = cv.ParamSpace(model)
    assert_close(sp.flatten(got), torch.diagonal(dense_ggn(model, X, Y, loss))[idx], what="masked diag")
    for n, m in sciprune.get_masks(model).items():
        assert bool((got[n][~m] == 0).all())


def _kfac_reference(model, X, Y, loss):
    """A and G per layer from a loop over samples: J_z by jacrev, H_n by hessian of the loss."""
    names = [n for n, m in model.named_children() if isinstance(m, nn.Linear)]
    out = {}
    for layer in names:
        A = G = 0
        for x, t in zip(X, Y):
            def run(delta, x=x, layer=layer):
                h, a_in = x[None], None
                for cname, m in model.named_children():
                    if cname == layer:
                        a_in = h
                    h = m(h)
                    if cname == layer:
                        h = h + delta
                return h[0], a_in

            zdim = getattr(model, layer).out_features
            Jz = jacrev(lambda d: run(d)[0])(torch.zeros(zdim, dtype=F64))  # (C, out)
            a = run(torch.zeros(zdim, dtype=F64))[1][0].detach()
            abar = torch.cat([a, torch.ones(1, dtype=F64)])
            y = model(x[None]).detach()
            Hn = hessian(lambda yy, t=t: _loss(loss, yy, t[None]))(y)[0, :, 0, :]
            A = A + torch.outer(abar, abar)
            G = G + Jz.T @ Hn @ Jz
        out[layer] = (A / X.shape[0], G / X.shape[0])
    return out


@pytest.mark.parametrize("case", [CASES[1], CASES[2]], ids=[IDS[1], IDS[2]])
def test_kfac_factors_match_sample_loop(case):
    model, X, Y, loss = _problem(case, n=12)
    ref = _kfac_reference(model, X, Y, loss)
    got = cv.kfac_factors(model, (X, Y), loss=loss, batch_size=5)
    assert list(got) == list(ref)
    for layer, (A, G) in ref.items():
        assert_close(got[layer].A, A, what=f"A {layer}")
        assert_close(got[layer].G, G, what=f"G {layer}")
        assert got[layer].weight == f"{layer}.weight" and got[layer].bias == f"{layer}.bias"
    value, layer, M = cv.kfac_spectral_radius(got)
    lmax = {c: float(torch.linalg.eigvalsh(f.dense())[-1]) for c, f in got.items()}
    assert layer == max(lmax, key=lmax.get) and value == pytest.approx(lmax[layer], rel=1e-10)
    K = got[layer].dense()
    assert M.shape == (got[layer].G.shape[0], got[layer].A.shape[0])
    assert_close(K @ M.reshape(-1), value * M.reshape(-1), rtol=1e-10, what="eigenvector")


def _wb_perm(n_out, n_in):
    """Positions of [W b] row-major entries in the flat (W.flatten(), b) vector."""
    return torch.tensor([i * n_in + j if j < n_in else n_out * n_in + i for i in range(n_out) for j in range(n_in + 1)])


@pytest.mark.parametrize("n, loss", [(30, "mse"), (1, "mse"), (1, "cross_entropy")])
def test_kfac_exact_for_single_linear_layer(n, loss):
    model = nn.Sequential(OrderedDict(linear0=nn.Linear(4, 3))).to(F64)
    X = torch.randn(n, 4, dtype=F64)
    Y = torch.randn(n, 3, dtype=F64) if loss == "mse" else torch.randint(0, 3, (n,))
    perm = _wb_perm(3, 4)
    G = dense_ggn(model, X, Y, loss)[perm][:, perm]
    assert_close(cv.kfac_factors(model, (X, Y), loss=loss)["linear0"].dense(), G, what="K-FAC single layer")


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_kfac_exact_for_one_datum_every_layer(loss):
    model, X, Y, _ = _problem(("deep", 3, [5, 4, 6], 3, "tanh", loss), n=1)
    f = cv.kfac_factors(model, (X, Y), loss=loss)
    for layer, lin in model.named_children():
        if isinstance(lin, nn.Linear):
            names = [f"{layer}.weight", f"{layer}.bias"]
            perm = _wb_perm(lin.out_features, lin.in_features)
            G = dense_ggn(model, X, Y, loss, names=names)[perm][:, perm]
            assert_close(f[layer].dense(), G, what=f"one datum {layer}")


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_kfac_sampled_converges_and_is_seeded(loss):
    model, X, Y, _ = _problem(("s", 2, [4], 3, "tanh", loss), n=4000)
    exact = cv.kfac_factors(model, (X, Y), loss=loss)
    s = cv.kfac_factors(model, (X, Y), loss=loss, fisher="sampled", seed=4)
    for layer in exact:
        assert_close(s[layer].A, exact[layer].A, rtol=1e-12, what="A does not depend on the targets")
        err = torch.linalg.norm(s[layer].G - exact[layer].G) / torch.linalg.norm(exact[layer].G)
        assert float(err) < 0.1, (layer, float(err))
    s7 = cv.kfac_factors(model, (X, Y), loss=loss, fisher="sampled", seed=4, batch_size=700)
    assert_close(s7["linear1"].G, s["linear1"].G, rtol=1e-10, what="sampled, batch invariant")
    other = cv.kfac_factors(model, (X, Y), loss=loss, fisher="sampled", seed=5)
    assert not torch.equal(other["linear1"].G, s["linear1"].G)


# --- errors -------------------------------------------------------------------------------------

def test_errors_say_what_to_do():
    model, X, Y, loss = _problem(CASES[0])
    with pytest.raises(SciPruneError, match="loss must be one of"):
        cv.hvp(model, (X, Y), torch.zeros(3), loss="l1")
    with pytest.raises(SciPruneError, match="matching nothing"):
        cv.top_eigenpairs(model, (X, Y), loss=loss, names=["linear9"])
    dim = cv.ParamSpace(model, "linear1").dim
    with pytest.raises(SciPruneError, match=f"k must be at most {dim - 1}"):
        cv.top_eigenpairs(model, (X, Y), loss=loss, names="linear1", k=dim)
    with pytest.raises(SciPruneError, match="k must be at most"):
        cv.power_iteration_eigs(model, (X, Y), loss=loss, names="linear1", k=dim + 1)
    with pytest.raises(SciPruneError, match="matrix must be"):
        cv.hutchinson_trace(model, (X, Y), loss=loss, matrix="fisher")
    with pytest.raises(SciPruneError, match="fisher must be"):
        cv.kfac_factors(model, (X, Y), loss=loss, fisher="empirical")
    with pytest.raises(SciPruneError, match="not an elementwise activation"):
        cv.ggn_diagonal(nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=1), nn.Linear(4, 1)).to(F64), (X, Y), loss=loss)
    with pytest.raises(SciPruneError, match="shape"):
        cv.hvp(model, (X, Y), torch.zeros(2, dtype=F64), loss=loss)
    with pytest.raises(SciPruneError, match="which must be"):
        cv.top_eigenpairs(model, (X, Y), loss=loss, which="SA")
    with pytest.raises(SciPruneError, match="ncv must be"):
        cv.top_eigenpairs(model, (X, Y), loss=loss, k=3, ncv=3)
    with pytest.raises(SciPruneError, match="n_samples must be"):
        cv.hutchinson_diagonal(model, (X, Y), loss=loss, n_samples=0)
    with pytest.raises(SciPruneError, match="factors must be"):
        cv.kfac_spectral_radius({})


def test_kfac_spectral_radius_of_a_singular_float32_factor():
    """A pruned layer's factors are singular with repeated eigenvalues: the radius still comes out."""
    from sciprune.curvature import KFACFactor, kfac_spectral_radius

    A = torch.zeros(301, 301, dtype=torch.float32)
    A[-1, -1] = 1.0  # a layer whose inputs are all zero: only the bias column is alive
    A[:5, :5] = 2e-7 * torch.eye(5)
    G = torch.zeros(100, 100, dtype=torch.float32)
    G[3, 3] = 4.0
    value, layer, vec = kfac_spectral_radius({"linear1": KFACFactor(A=A, G=G, weight="linear1.weight", bias="linear1.bias")})
    assert value == pytest.approx(4.0) and layer == "linear1"
    assert vec.dtype == torch.float32 and vec.shape == (100, 301)
    assert float(vec[3, -1].abs()) == pytest.approx(1.0)


# --- hessian_summary: the K-FAC fields against factors built by hand -----------------------------

@pytest.mark.parametrize("case", [CASES[2], CASES[4]], ids=[IDS[2], IDS[4]])
def test_hessian_summary_kfac_fields_match_hand_built_factors(case):
    """kfac_lambda_A/G = top eigenvalues of A = E[abar abar^T] and G = E[J_z^T H_n J_z] from a loop over
    samples (float64), kfac_radius their product per layer, the attributes the largest layer's."""
    from sciprune.diagnostics import hessian_summary

    model, X, Y, loss = _problem(case, n=12)
    ref = {c: (A.detach(), G.detach()) for c, (A, G) in _kfac_reference(model, X, Y, loss).items()}
    lam_a = np.array([float(torch.linalg.eigvalsh(A)[-1]) for A, _ in ref.values()])
    lam_g = np.array([float(torch.linalg.eigvalsh(G)[-1]) for _, G in ref.values()])
    ds = hessian_summary(model, (X, Y), loss=loss, k=2, tol=1e-12, batch_size=5)
    assert list(ds["layer"].values) == list(ref)
    np.testing.assert_allclose(ds["kfac_lambda_A"].values, lam_a, rtol=1e-10)
    np.testing.assert_allclose(ds["kfac_lambda_G"].values, lam_g, rtol=1e-10)
    np.testing.assert_allclose(ds["kfac_radius"].values, lam_a * lam_g, rtol=1e-10)
    top = int(np.argmax(lam_a * lam_g))
    assert ds.attrs["kfac_layer"] == list(ref)[top]
    assert ds.attrs["kfac_spectral_radius"] == pytest.approx(lam_a[top] * lam_g[top], rel=1e-10)
    H = dense_hessian(model, X, Y, loss)
    np.testing.assert_allclose(ds["eigenvalue"].values, torch.linalg.eigvalsh(H).flip(0)[:2].numpy(), rtol=1e-6)
    assert ds.attrs["dim"] == H.shape[0]


@pytest.mark.parametrize("n", [1, 25])
def test_hessian_summary_kfac_radius_is_the_exact_top_eigenvalue_of_a_linear_layer(n):
    """One Linear layer with MSE: the loss is quadratic and K-FAC is exact (G = (2/C) I), so the radius
    equals the top eigenvalue of the dense Hessian, which Lanczos reports as ``eigenvalue[0]``."""
    from sciprune.diagnostics import hessian_summary

    g = torch.Generator().manual_seed(n)
    model = nn.Sequential(OrderedDict(linear0=nn.Linear(4, 3))).to(F64)
    X = 2.0 * torch.randn(n, 4, generator=g, dtype=F64) + 0.5
    Y = torch.randn(n, 3, generator=g, dtype=F64)
    top = float(torch.linalg.eigvalsh(dense_hessian(model, X, Y, "mse"))[-1])
    abar = torch.cat([X, torch.ones(n, 1, dtype=F64)], dim=1)
    lam_a = float(torch.linalg.eigvalsh(abar.T @ abar / n)[-1])
    ds = hessian_summary(model, (X, Y), loss="mse", k=1, tol=1e-12)
    assert ds["kfac_lambda_G"].values == pytest.approx([2.0 / 3.0], rel=1e-12)
    assert ds["kfac_lambda_A"].values == pytest.approx([lam_a], rel=1e-10)
    assert ds["kfac_radius"].values == pytest.approx([top], rel=1e-10)
    assert ds.attrs["kfac_spectral_radius"] == pytest.approx(top, rel=1e-10) and ds.attrs["kfac_layer"] == "linear0"
    assert float(ds["eigenvalue"][0]) == pytest.approx(top, rel=1e-8)
