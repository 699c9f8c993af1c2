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
    ForeignFileError,
    generate,
    initial_value,
    pdebench_config,
    retardation,
    solve_batch,
    solve_sample,
)
from sciprune.errors import SciPruneError

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
        for name in f:  # bit for bit: a sample does not depend on its chunk's other members
            assert f[name]["data"][()].tobytes() == g[name]["data"][()].tobytes()
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
    with pytest.raises(ForeignFileError, match="not an HDF5 file"):
        generate(junk, n_samples=1, nx=16, nt=11, workers=1)
    assert junk.read_text() == "not hdf5"  # never touched
    assert not (tmp_path / "junk.h5.lock").exists()  # refused before the lock is taken


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
    (dict(workers=0), r"workers must be an integer in \[1, 4096\], got 0"),
    (dict(workers=4097), r"workers must be an integer in \[1, 4096\], got 4097"),
    (dict(first_seed=2**32 - 1, n_samples=2), r"must be < 2\*\*32"),
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


def test_resume_upgrades_format_1_files_and_leaves_complete_ones_alone(tmp_path):
    """Files of format 1 (no ``config``) are used as they are when complete, and get PDEBench's
    ``config`` on every group (and format 2) when a run writes into them anyway."""
    path = tmp_path / "v1.h5"
    kw = dict(nx=16, nt=11, workers=1)
    generate(path, n_samples=2, **kw)
    with h5py.File(path, "a") as f:
        f.attrs["format_version"] = 1
        for name in f:
            del f[name].attrs["config"]
    before = path.read_bytes()
    generate(path, n_samples=2, **kw)
    assert path.read_bytes() == before
    generate(path, n_samples=3, **kw)
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2
        assert [f[n].attrs["config"] for n in sorted(f)] == [
            pdebench_config(i, nx=16, nt=11) for i in range(3)]


def test_resume_keeps_members_it_did_not_write(tmp_path):
    """Only leftovers of an interrupted run are deleted; a user's own addition to the file stays,
    and does not make a complete file look unfinished."""
    path = tmp_path / "ds.h5"
    kw = dict(nx=16, nt=11, workers=1)
    generate(path, n_samples=1, **kw)
    with h5py.File(path, "a") as f:
        f["notes"] = np.arange(3)
    before = path.read_bytes()
    generate(path, n_samples=1, **kw)
    assert path.read_bytes() == before
    generate(path, n_samples=2, **kw)
    with h5py.File(path, "r") as f:
        assert sorted(f) == ["0000", "0001", "notes"]


def test_mismatched_file_without_samples_is_replaced(tmp_path):
    """A file of ours whose parameters differ but that holds no complete sample has nothing to
    lose (e.g. a run killed right after creating it, then restarted with another nx)."""
    path = tmp_path / "ds.h5"
    generate(path, n_samples=1, nx=16, nt=11, workers=1)
    with h5py.File(path, "a") as f:
        del f["0000"]
    generate(path, n_samples=1, nx=24, nt=11, workers=1)
    with h5py.File(path, "r") as f:
        assert f.attrs["nx"] == 24 and f["0000/data"].shape == (11, 24, 1)


# ---------------------------------------------------------------------------------------------
# PDEBench's loaders on our files (issue 9, item 14)
#
# PDEBench (github.com/pdebench/PDEBench, HEAD 9754b4c) writes each sample group with
# pdebench/data_gen/gen_diff_sorp.py::simulator: datasets "NNNN/data", "NNNN/grid/x", "NNNN/grid/t"
# and seed_group.attrs["config"] = OmegaConf.to_yaml(config) of configs/diff-sorp.yaml with
# sim.seed = i. The tests below repeat, step by step, what its loaders do with a file (their code is
# under a non-commercial licence, so it is restated here, not copied).

#: The ``sim`` block of PDEBench's configs/diff-sorp.yaml (5E-4 and 3.5E-4 as OmegaConf reads them).
PDEBENCH_SIM = {"D": 5e-4, "por": 0.29, "rho_s": 2880, "k_f": 3.5e-4, "n_f": 0.874, "sol": 1.0, "t": 500,
                "tdim": 501, "x_left": 0.0, "x_right": 1.0, "xdim": 1024, "n": 1, "seed": "???"}


@pytest.fixture(scope="module")
def pdebench_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("pdebench") / "1D_diff-sorp_sciprune.h5"
    return generate(path, n_samples=10, nx=16, nt=11, workers=1)


def test_config_attribute_has_pdebench_keys_and_yaml_form(pdebench_file):
    yaml = pytest.importorskip("yaml")
    with h5py.File(pdebench_file, "r") as f:
        for name in sorted(f):
            text = f[name].attrs["config"]
            assert isinstance(text, str)
            config = yaml.load(text, Loader=yaml.SafeLoader)
            assert list(config) == ["name", "sim", "plot"]
            assert config["name"] == "1d_diff-sorp"
            assert list(config["sim"]) == list(PDEBENCH_SIM)  # same keys, same order
            expect = PDEBENCH_SIM | {"tdim": 11, "xdim": 16, "seed": int(name)}  # this file's grid
            assert config["sim"] == expect
            assert {k: type(v) for k, v in config["sim"].items()} == {k: type(v) for k, v in expect.items()}
            assert config["plot"] == {"t_idx": 1.0, "dim": 1, "channel_idx": 0}
            # The text is what PyYAML's block-style dumper (used by OmegaConf.to_yaml) writes.
            assert text == yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


@settings(max_examples=60, deadline=None)
@given(st.one_of(st.floats(allow_nan=False), st.integers(-2**63, 2**63)))
def test_yaml_numbers_read_back_exactly(value):
    yaml = pytest.importorskip("yaml")
    from sciprune.data.diffsorp_format import _yaml_number

    back = yaml.safe_load(f"v: {_yaml_number(value)}")["v"]
    assert back == value and type(back) is type(value)


def test_pdebench_pinn_loader_steps(pdebench_file):
    """pdebench/models/pinn/utils.py: PINNDataset1D.__init__, PINNDatasetDiffSorption
    (.__init__, .get_initial_condition), generate_plot_input, get_name; and
    pdebench/models/pinn/train.py::_run_training, which reads config["plot"]["dim"] and
    config["sim"]["xdim"]. This is where PDEBench failed with KeyError: 'config' before."""
    yaml = pytest.importorskip("yaml")
    torch = pytest.importorskip("torch")
    seed = "0003"
    with h5py.File(pdebench_file, "r") as h5_file:
        seed_group = h5_file[seed]
        config = yaml.load(seed_group.attrs["config"], Loader=yaml.SafeLoader)
        grid_x = torch.tensor(seed_group["grid"]["x"], dtype=torch.float)
        grid_t = torch.tensor(seed_group["grid"]["t"], dtype=torch.float)
        xx, tt = torch.meshgrid([grid_x, grid_t], indexing="ij")
        data_input = torch.vstack([xx.ravel(), tt.ravel()]).T
        data_output = torch.tensor(np.array(seed_group["data"]), dtype=torch.float)
        data_output = data_output.permute([1, 0, -1])  # [t, x, c] -> [x, t, c]
        raw = np.array(seed_group["data"])
    assert data_input.shape == (16 * 11, 2) and data_output.shape == (16, 11, 1)
    flat = data_output.ravel()  # PINNDatasetDiffSorption ravels the output
    # row k of the input is (x_i, t_j) with k = i * nt + j, and the output there is u(t_j, x_i)
    for i, j in [(0, 0), (5, 3), (15, 10)]:
        k = i * 11 + j
        assert data_input[k].tolist() == [float(grid_x[i]), float(grid_t[j])]
        assert float(flat[k]) == float(raw[j, i, 0])
    # get_initial_condition: Nx from config["sim"]["xdim"], an RNG seeded with config["sim"]["seed"]
    n_x = config["sim"]["xdim"]
    rng = np.random.default_rng(config["sim"]["seed"])
    u0 = np.ones(n_x) * rng.uniform(0, 0.2)
    assert data_input[:n_x, :].shape == (16, 2) and u0.shape == (16,)
    # generate_plot_input and get_name; train.py's plot settings
    x_space = np.linspace(config["sim"]["x_left"], config["sim"]["x_right"], config["sim"]["xdim"])
    assert x_space.shape == (16,) and config["name"] == "1d_diff-sorp"
    assert config["plot"]["dim"] == 1 and config["sim"]["xdim"] == len(grid_x)


@pytest.mark.parametrize("if_test", [False, True])
def test_pdebench_fno_and_unet_loader_steps(pdebench_file, if_test):
    """pdebench/models/fno/utils.py::FNODatasetMult and unet/utils.py::UNetDatasetMult: sorted root
    keys, the last 10% as the test split, then per sample data as float32 permuted to
    [x, t, v] and (FNO) grid/x as [x, 1]. Every root key must be a sample group."""
    torch = pytest.importorskip("torch")
    initial_step, test_ratio = 10, 0.1
    with h5py.File(pdebench_file, "r") as h5_file:
        data_list = sorted(h5_file.keys())
    assert data_list == [f"{i:04d}" for i in range(10)]
    test_idx = int(len(data_list) * (1 - test_ratio))
    split = data_list[test_idx:] if if_test else data_list[:test_idx]
    assert split == (["0009"] if if_test else [f"{i:04d}" for i in range(9)])
    with h5py.File(pdebench_file, "r") as h5_file:
        seed_group = h5_file[split[0]]
        data = torch.tensor(np.array(seed_group["data"], dtype="f"), dtype=torch.float)
        permute_idx = list(range(1, len(data.shape) - 1)) + [0, -1]
        data = data.permute(permute_idx)
        dim = len(data.shape) - 2
        grid = torch.tensor(np.array(seed_group["grid"]["x"], dtype="f"), dtype=torch.float).unsqueeze(-1)
    assert data.shape == (16, 11, 1) and dim == 1 and grid.shape == (16, 1)
    assert data[..., :initial_step, :].shape == (16, 10, 1)
    expect = solve_sample(initial_value(int(split[0])), nx=16, nt=11).astype(np.float32)
    np.testing.assert_array_equal(data[..., 0].numpy(), expect.T)
