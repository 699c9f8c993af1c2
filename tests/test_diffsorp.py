"""Tests of the diffusion-sorption generator (PDEBench, Takamoto et al. 2022).

The references here are written independently of the library: a plain scipy.sparse form of the
semi-discrete system (the way PDEBench builds it) integrated with DOP853 at rtol 1e-12.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import cumulative_simpson, solve_ivp

from sciprune.data.diffsorp import (
    DiffSorpParams,
    cell_centres,
    generate,
    initial_value,
    retardation,
    solve_batch,
    solve_sample,
)
from sciprune.errors import DataFormatError, SciPruneError

P = DiffSorpParams()
T = np.linspace(0.0, 500.0, 101)


def plain_rhs(nx: int):
    """PDEBench's RHS from the equations: D/R(u) (A u) + b, A = tridiag(1, -2, 1)/dx^2."""
    dx = 1.0 / nx
    lap = sp.diags([np.ones(nx - 1), -2 * np.ones(nx), np.ones(nx - 1)], [-1, 0, 1],
                   format="csr") / dx**2
    c_r = (1 - 0.29) / 0.29 * 2880 * 3.5e-4 * 0.874

    def rhs(t, u):
        r = 1 + c_r * (u + 1e-6) ** (0.874 - 1)
        b = np.zeros(nx)
        b[0] = 5e-4 / r[0] / dx**2 * 1.0
        b[-1] = 5e-4 / r[-1] / dx**2 * (5e-4 * (u[-2] - u[-1]) / dx)
        return 5e-4 / r * (lap @ u) + b

    return rhs


def reference(c0: float, nx: int, t_eval=T, **kw) -> np.ndarray:
    """(nt, nx) solution of the plain RHS; default: converged DOP853 (rtol 1e-12, atol 1e-14)."""
    kw = kw or {"method": "DOP853", "rtol": 1e-12, "atol": 1e-14}
    sol = solve_ivp(plain_rhs(nx), (t_eval[0], t_eval[-1]), np.full(nx, c0), t_eval=t_eval, **kw)
    assert sol.success
    return sol.y.T


# ---------------------------------------------------------------------------------------------
# Constants and seeding


def test_retardation_anchors():
    r = retardation(np.array([1.0, 0.1, 0.0]), P)
    # R(1) = 3.15691, R(0.1) = 3.88291, R(0) = 13.2979; 7-digit values from the reference note.
    np.testing.assert_allclose(r, [3.156911, 3.882915, 13.297938], rtol=0, atol=1e-6)
    assert P.c_R == pytest.approx(2.1569114, rel=1e-7)
    assert np.isnan(retardation(-1e-3, P))
    assert retardation(-1e-3, P, clip_negative=True) == pytest.approx(13.2979, rel=1e-5)


def test_initial_value_legacy_seeding_and_rng_state_kept():
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    got = [initial_value(s) for s in range(5)]
    np.testing.assert_allclose(got, [0.1097627, 0.0834044, 0.0871990, 0.1101596, 0.1934060],
                               atol=5e-8)
    np.testing.assert_array_equal(np.random.get_state()[1], before)


def test_cell_centres():
    np.testing.assert_allclose(cell_centres(4), [0.125, 0.375, 0.625, 0.875])
    x = cell_centres(1024)
    assert x[0] == pytest.approx(0.00048828125) and x[-1] == pytest.approx(0.99951171875)


# ---------------------------------------------------------------------------------------------
# Convergence


def test_time_integration_converges_to_1e7_against_scipy_reference():
    """Batched RODAS4 (default tol) vs an independent converged DOP853 on the plain RHS."""
    seeds = [0, 4, 5133]  # 5133 has the smallest c0 of seeds 0..9999 (5.4e-5)
    c0 = [initial_value(s) for s in seeds]
    nx = 64
    fast = solve_batch(c0, nx=nx)
    loose = solve_batch(c0, nx=nx, tol=1e-5)
    for k, c in enumerate(c0):
        ref = reference(c, nx)
        err = np.abs(fast[k] - ref).max()
        assert err < 1e-7, (seeds[k], err)
        assert np.abs(loose[k] - ref).max() > 3 * err  # error shrinks as the tolerance tightens
    # The scipy reference paths of accurate mode agree with the batched path.
    for solver in ("radau", "bdf"):
        other = solve_sample(c0[0], nx=nx, solver=solver)
        assert np.abs(other - fast[0]).max() < 1e-7


def test_batch_members_are_independent():
    a = solve_batch([0.05, 0.15, 1e-4], nx=24, nt=11)
    b = solve_batch([0.15], nx=24, nt=11)
    np.testing.assert_allclose(a[1], b[0], rtol=0, atol=1e-13)
    np.testing.assert_allclose(solve_sample(0.15, nx=24, nt=11), b[0], rtol=0, atol=1e-13)


def test_spatial_discretisation_converges_at_first_order():
    """Cell averages of consecutive grids (32..256) differ by O(dx).

    First order is expected: the interior 3-point stencil is second order, but the boundary values
    are imposed at ghost nodes half a cell outside (0, 1) (u = 1 at x = -dx/2; the right ghost
    D (u_{N-2} - u_{N-1})/dx at x = 1 + dx/2), an O(dx) shift of both boundary conditions.
    Times t >= 50 (the first outputs are dominated by the initial boundary jumps).
    """
    ns = [32, 64, 128, 256]
    sol = [solve_batch([initial_value(0)], nx=n)[0] for n in ns]
    diffs = []
    for coarse, fine in zip(sol[:-1], sol[1:]):
        avg = fine.reshape(fine.shape[0], -1, 2).mean(-1)
        diffs.append(np.abs(coarse[10:] - avg[10:]).max())
    orders = [math.log2(diffs[i] / diffs[i + 1]) for i in range(len(diffs) - 1)]
    assert all(0.9 < p < 1.1 for p in orders), (diffs, orders)


def test_sorbed_plus_dissolved_mass_balances_boundary_fluxes():
    """Discrete mass balance of the non-conservative scheme, to solver tolerance.

    The scheme is R(u_i) du_i/dt = D (u_{i-1} - 2 u_i + u_{i+1}) / dx^2. Multiply by dx and sum:
    the right side telescopes to the two face fluxes, and R(u) du/dt = dS(u)/dt with the
    antiderivative S(u) = u + ((1-phi)/phi) rho_s k_f (u + eps)^{n_f} (dissolved + sorbed mass):

        d/dt [dx sum_i S(u_i)] = D (u_{-1} - u_0)/dx - D (u_{N-1} - u_N)/dx,

    with u_{-1} = 1 and u_N = D (u_{N-2} - u_{N-1})/dx. Integrating in time (Simpson on a
    geometric grid of 2000 outputs), M(t) - M(0) must equal the integrated flux.
    """
    nx = 32
    t_eval = np.concatenate([[0.0], np.geomspace(1e-3, 500.0, 2000)])
    u = solve_batch([initial_value(0), initial_value(5133)], nx=nx, t_eval=t_eval)
    dx = 1.0 / nx
    mass = dx * (u + (1 - P.phi) / P.phi * P.rho_s * P.k_f * (u + P.eps) ** P.n_f).sum(-1)
    ghost = P.D / dx * (u[..., -2] - u[..., -1])
    flux = P.D / dx * ((1.0 - u[..., 0]) - (u[..., -1] - ghost))
    inflow = cumulative_simpson(flux, x=t_eval, axis=-1, initial=0.0)
    change = mass - mass[:, :1]
    assert change.max() > 0.5  # the balance is not trivially satisfied
    np.testing.assert_allclose(change, inflow, rtol=0, atol=1e-8)


@settings(max_examples=12, deadline=None)
@given(c0=st.floats(0.0, 0.2), nx=st.integers(3, 12))
def test_discrete_maximum_principle(c0, nx):
    """Data in [0, 1] (boundary value 1, drain >= 0): 0 <= u <= 1, u decreasing in x for t > 0."""
    u = solve_sample(c0, nx=nx, nt=6)
    assert u.min() >= 0.0 and u.max() <= 1.0
    assert np.all(np.diff(u[1:], axis=-1) <= 1e-12)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_initial_value_range(seed):
    assert 0.0 <= initial_value(seed) < 0.2


# ---------------------------------------------------------------------------------------------
# PDEBench mode


def test_pdebench_mode_matches_plain_rk45_and_carries_its_error():
    c0 = initial_value(0)
    ours = solve_sample(c0, nx=64, mode="pdebench")
    plain = reference(c0, 64, method="RK45")  # solve_ivp defaults: rtol 1e-3, atol 1e-6
    assert np.abs(ours - plain).max() < 1e-6
    accurate = solve_sample(c0, nx=64)
    gap = np.abs(ours - accurate).max()
    assert 1e-3 < gap < 1e-2  # RK45 at default tolerances: ~3e-3 at nx=64


# ---------------------------------------------------------------------------------------------
# Files


def test_file_layout_is_pdebench(tmp_path):
    path = generate(tmp_path / "ds.h5", n_samples=3, nx=16, nt=11, mode="pdebench", workers=1)
    with h5py.File(path, "r") as f:
        assert sorted(f.keys()) == ["0000", "0001", "0002"]
        assert f.attrs["mode"] == "pdebench" and f.attrs["nx"] == 16 and f.attrs["rtol"] == 1e-3
        for i, name in enumerate(["0000", "0001", "0002"]):
            g = f[name]
            assert set(g.keys()) == {"data", "grid"} and set(g["grid"].keys()) == {"x", "t"}
            data, x, t = g["data"], g["grid/x"], g["grid/t"]
            assert data.shape == (11, 16, 1) and data.dtype == np.float32
            assert x.shape == (16,) and x.dtype == np.float32
            assert t.shape == (11,) and t.dtype == np.float32
            np.testing.assert_array_equal(x[()], cell_centres(16).astype(np.float32))
            np.testing.assert_array_equal(t[()], np.linspace(0, 500, 11).astype(np.float32))
            c0 = initial_value(i)
            assert g.attrs["seed"] == i and g.attrs["c0"] == c0
            np.testing.assert_array_equal(data[0, :, 0], np.float32(c0))
            expect = solve_sample(c0, nx=16, nt=11, mode="pdebench").astype(np.float32)
            np.testing.assert_array_equal(data[:, :, 0], expect)


def test_resume_skips_finished_and_redoes_partial_samples(tmp_path):
    path = tmp_path / "ds.h5"
    kw = dict(nx=16, nt=11, workers=1)
    generate(path, n_samples=3, **kw)
    with h5py.File(path, "a") as f:
        f["0000"].attrs["marker"] = 7                # must survive: 0000 is finished
        before = f["0000/data"][()]
        del f["0001"].attrs["complete"]              # final name but never marked complete
        f.move("0002", "_partial_0002")              # interrupted before the rename
        del f["_partial_0002/grid"]
    calls = []
    generate(path, n_samples=4, progress=lambda d, n: calls.append((d, n)), **kw)
    assert calls == [(2, 4), (3, 4), (4, 4)]
    fresh = generate(tmp_path / "fresh.h5", n_samples=4, **kw)
    with h5py.File(path, "r") as f, h5py.File(fresh, "r") as g:
        assert sorted(f.keys()) == ["0000", "0001", "0002", "0003"]
        assert f["0000"].attrs["marker"] == 7
        np.testing.assert_array_equal(f["0000/data"][()], before)
        for name in f:
            np.testing.assert_allclose(f[name]["data"][()], g[name]["data"][()], atol=1e-7)
    calls.clear()
    generate(path, n_samples=4, progress=lambda d, n: calls.append((d, n)), **kw)
    assert calls == []


def test_resume_refuses_other_parameters_and_foreign_files(tmp_path):
    path = tmp_path / "ds.h5"
    generate(path, n_samples=1, nx=16, nt=11, workers=1)
    with pytest.raises(SciPruneError, match="nx"):
        generate(path, n_samples=2, nx=32, nt=11, workers=1)
    with pytest.raises(SciPruneError, match="mode"):
        generate(path, n_samples=2, nx=16, nt=11, mode="pdebench", workers=1)
    generate(path, n_samples=1, nx=32, nt=11, workers=1, overwrite=True)
    with h5py.File(path, "r") as f:
        assert f.attrs["nx"] == 32
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.create_group("0000")
    with pytest.raises(SciPruneError, match="not written by sciprune"):
        generate(foreign, n_samples=1, nx=16, nt=11, workers=1)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(DataFormatError):
        generate(junk, n_samples=1, nx=16, nt=11, workers=1)


@pytest.mark.parametrize("mode", ["accurate", "pdebench"])
def test_parallel_output_equals_serial(tmp_path, mode):
    kw = dict(n_samples=4, nx=16, nt=11, mode=mode, first_seed=7)
    serial = generate(tmp_path / "s.h5", workers=1, **kw)
    parallel = generate(tmp_path / "p.h5", workers=2, **kw)
    with h5py.File(serial, "r") as f, h5py.File(parallel, "r") as g:
        assert sorted(f.keys()) == sorted(g.keys()) == ["0007", "0008", "0009", "0010"]
        for name in f:
            np.testing.assert_array_equal(f[name]["data"][()], g[name]["data"][()])
            assert f[name].attrs["c0"] == g[name].attrs["c0"] == initial_value(int(name))


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_samples=0), "n_samples must be an integer >= 1, got 0"),
    (dict(nx=1), "nx must be an integer >= 3, got 1"),
    (dict(nx=16.0), "nx must be an integer >= 3"),
    (dict(nt=1), "nt must be an integer >= 2, got 1"),
    (dict(mode="fast"), "mode must be one of accurate, pdebench"),
    (dict(workers=0), "workers must be an integer >= 1"),
    (dict(first_seed=-1), "first_seed must be an integer >= 0"),
    (dict(mode="pdebench", solver="radau"), "solver must be one of rk45"),
])
def test_bad_arguments_raise(tmp_path, kwargs, message):
    args = dict(n_samples=1, nx=16, nt=11, workers=1) | kwargs
    with pytest.raises(SciPruneError, match=message):
        generate(tmp_path / "x.h5", **args)
    assert not (tmp_path / "x.h5").exists()


def test_bad_solve_arguments_raise():
    with pytest.raises(SciPruneError, match="c0"):
        solve_sample(-0.1, nx=16)
    with pytest.raises(SciPruneError, match="c0"):
        solve_sample(float("nan"), nx=16)
    with pytest.raises(SciPruneError, match="t_end"):
        solve_sample(0.1, nx=16, t_end=0)
    with pytest.raises(SciPruneError, match="t_eval"):
        solve_batch([0.1], nx=16, t_eval=np.array([0.0, 2.0, 1.0]))


def test_dataset_script_writes_and_reports_errors(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "datasets" / "diffusion_sorption.py"
    spec = importlib.util.spec_from_file_location("diffusion_sorption_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "s.h5"
    common = ["--out", str(out), "--nt", "3", "--workers", "1", "--quiet"]
    assert module.main(common + ["--samples", "2", "--nx", "8"]) == 0
    with h5py.File(out, "r") as f:
        assert sorted(f.keys()) == ["0000", "0001"]
    assert module.main(common + ["--samples", "2", "--nx", "16"]) == 2
    assert "nx" in capsys.readouterr().err
