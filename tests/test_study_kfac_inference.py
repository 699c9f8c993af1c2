"""``[diagnostics] kfac`` and ``inference``: the K-FAC spectral radius per Linear layer and the forward
pass's time per row of every network of a study.

``kfac_radius`` is checked against the largest eigenvalue of the dense block kron(G_l, A_l) of the
exact-Fisher K-FAC factors (float64), on plain and on compacted (neuron-pruned, physically smaller)
networks; the study's values against the same computation on the same networks, and ``sciprune sweep``
against ``sciprune run``. ``inference_us`` is a wall-clock time: only its dims, labels and sign are
checked. Off by default: a case without the keys dumps, and records, exactly as before.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import tiny_case
from study_networks import rebuild
from hypothesis import given, settings
from hypothesis import strategies as st

import sciprune
from sciprune.config import DiagnosticsSpec, load_case
from sciprune.curvature import kfac_factors
from sciprune.data._types import TaskData
from sciprune.inference_time import forward_time_us
from sciprune.pipeline import run_case
from sciprune.results import read_dataset
from sciprune.study_diagnostics import DIAGNOSTICS, network_diagnostics
from sciprune.sweep import run_sweep

F64 = torch.float64
pytestmark = pytest.mark.usefixtures("no_figures")


def _task(kind: str, n: int = 40, d: int = 3, c: int = 2, seed: int = 0) -> TaskData:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3 * n, d, generator=g, dtype=F64)
    Y = torch.randint(0, c, (3 * n,), generator=g) if kind == "classification" else torch.randn(3 * n, c, generator=g,
                                                                                                dtype=F64)
    return TaskData(kind, X[:n], Y[:n], X[n : 2 * n], Y[n : 2 * n], X[2 * n :], Y[2 * n :])


def _brute_radii(model, task) -> list[float]:
    """Largest eigenvalue of the dense kron(G, A) of every layer (float64 eigvalsh)."""
    loss = "mse" if task.task == "regression" else "cross_entropy"
    factors = kfac_factors(model, (task.X_train, task.Y_train), loss=loss, fisher="exact")
    return [float(torch.linalg.eigvalsh(f.dense().double())[-1]) for f in factors.values()]


@settings(max_examples=12, deadline=None)
@given(widths=st.lists(st.integers(1, 5), min_size=1, max_size=3), seed=st.integers(0, 10**6),
       kind=st.sampled_from(["regression", "classification"]), activation=st.sampled_from(["tanh", "relu"]))
def test_kfac_radius_is_the_top_eigenvalue_of_each_layers_block(widths, seed, kind, activation):
    torch.set_num_threads(1)
    task = _task(kind, seed=seed)
    model = sciprune.MLP(3, widths, 2, activation, seed=seed).to(F64)
    got = network_diagnostics(model, task, hessian_top=0, psp=False, kfac=True)
    assert list(got) == ["kfac_radius"]
    want = _brute_radii(model, task)
    assert len(got["kfac_radius"]) == len(widths) + 1
    np.testing.assert_allclose(got["kfac_radius"], want, rtol=1e-9, atol=1e-14)
    loss = "mse" if kind == "regression" else "cross_entropy"
    radius, _, _ = sciprune.curvature.kfac_spectral_radius(kfac_factors(model, (task.X_train, task.Y_train), loss=loss))
    assert max(got["kfac_radius"]) == pytest.approx(radius, rel=1e-12)  # the network's radius: max over layers


def test_a_compacted_network_gets_every_diagnostic():
    torch.set_num_threads(1)
    task = _task("regression")
    model = sciprune.MLP(3, [8, 6], 2, "relu", seed=1).to(F64)
    sciprune.prune(model, "neuron-magnitude", 0.5)
    small = sciprune.compact(model)
    widths = [m.out_features for m in small if isinstance(m, torch.nn.Linear)][:-1]
    assert widths != [8, 6]  # physically smaller
    got = network_diagnostics(small, task, hessian_top=2, psp=True, kfac=True, inference=True)
    assert set(got) == set(DIAGNOSTICS)
    np.testing.assert_allclose(got["kfac_radius"], _brute_radii(small, task), rtol=1e-9, atol=1e-14)
    assert len(got["psp_norm"]) == 2 and len(got["inference_us"]) == 2
    assert all(np.isfinite(v).all() for v in map(np.asarray, got.values()))


def test_forward_time_is_per_row_and_refuses_bad_arguments():
    model = sciprune.MLP(3, [4], 1, "tanh", seed=0).to(F64)
    X = torch.randn(50, 3, dtype=F64)
    threads = torch.get_num_threads()
    for batch in (1, None):
        for n in (1, 2):
            t = forward_time_us(model, X, batch=batch, repeats=3, rows=5, threads=n)
            assert np.isfinite(t) and 0 < t < 1e5
    assert torch.get_num_threads() == threads  # set back
    assert next(model.parameters()).dtype == F64  # the model itself is left as it was (a float32 copy is timed)
    for kwargs, needle in (({"batch": 2}, "batch"), ({"batch": 1, "repeats": 0}, "repeats"),
                           ({"batch": 1, "threads": 0}, "threads")):
        with pytest.raises(sciprune.errors.SciPruneError, match=needle):
            forward_time_us(model, X, **kwargs)
    with pytest.raises(sciprune.errors.SciPruneError, match="shape"):
        forward_time_us(model, X[:0], batch=None)


def test_off_by_default_and_the_dump_of_older_cases_unchanged():
    d = DiagnosticsSpec(hessian_top=3, psp=True)
    assert not (d.kfac or d.inference)
    assert d.model_dump(mode="json") == {"hessian_top": 3, "psp": True, "lines": [], "line_points": 21}
    assert DiagnosticsSpec(kfac=True).model_dump()["kfac"] is True and DiagnosticsSpec(inference=True).enabled
    task = _task("regression")
    model = sciprune.MLP(3, [4], 2, "tanh", seed=0).to(F64)
    assert network_diagnostics(model, task, hessian_top=0, psp=True) == network_diagnostics(
        model, task, hessian_top=0, psp=True, kfac=False, inference=False)
    assert "kfac_radius" not in network_diagnostics(model, task, hessian_top=0, psp=True)


# --- in a study ------------------------------------------------------------------------------------

DIAG = {"kfac": True, "inference": True}


def _case(tmp_path, data, name):
    path = tmp_path / f"{name}.toml"
    path.write_text(tiny_case(tmp_path / name, data, name=name, diagnostics=DIAG, model={"widths": [5, 4]},
                              prune={"methods": ["magnitude"], "ratios": [0.5]}, train={"epochs": 4},
                              finetune={"epochs": 1}))
    return load_case(path)


def test_run_and_sweep_record_kfac_and_inference(tmp_path, tiny_pdebench):
    torch.set_num_threads(1)
    case = _case(tmp_path, tiny_pdebench, "r")
    run = read_dataset(run_case(case, show_progress=False, echo=lambda s: None))
    t, dense, pruned = rebuild(case)
    at = {"arch": "model", "noise": 0.0, "seed": 0}
    for prefix, model, where in (("dense_", dense, at), ("", pruned, {**at, "method": "magnitude", "ratio": 0.5})):
        np.testing.assert_allclose(run[f"{prefix}kfac_radius"].sel(where).values, _brute_radii(model, t), rtol=1e-9)
        us = run[f"{prefix}inference_us"].sel(where)
        assert us.dims == ("batch",) and np.all(np.isfinite(us.values)) and np.all(us.values > 0)
    assert run["kfac_radius"].dims == ("arch", "noise", "seed", "method", "ratio", "linear")
    assert list(run["linear"].values) == [1, 2, 3] and list(run["batch"].values) == ["one", "all"]
    assert "hessian_eig" not in run and "psp_norm" not in run

    sweep = read_dataset(run_sweep(_case(tmp_path, tiny_pdebench, "s"), show_progress=False, echo=lambda s: None))
    for v in ("kfac_radius", "dense_kfac_radius"):
        np.testing.assert_allclose(sweep[v].values, run[v].values, rtol=1e-6, err_msg=v)
    assert sweep["inference_us"].dims == run["inference_us"].dims
    assert list(sweep["batch"].values) == ["one", "all"] and bool((sweep["inference_us"] > 0).all())


@pytest.mark.parametrize("key, value", [("kfac", "yes"), ("inference", 1), ("kfac", [True])])
def test_a_bad_value_is_one_line_before_any_work(tmp_path, tiny_pdebench, key, value):
    from malformed import assert_user_error, invoke

    path = tmp_path / "bad.toml"
    path.write_text(tiny_case(tmp_path / "out", tiny_pdebench, diagnostics={key: value}))
    assert_user_error(invoke(["run", path, "--quiet"]), f"diagnostics.{key}", "bool")


def test_a_stored_record_with_the_wrong_number_of_times_is_a_problem():
    from sciprune.study_records import diagnostics_problem

    assert diagnostics_problem({"inference_us": [3.0, 0.5], "kfac_radius": [1.0, 2.0, 0.1]}) is None
    for bad in ([3.0], [3.0, 0.5, 1.0]):
        assert "'diagnostics.inference_us' must have 2 values (one, all)" in diagnostics_problem({"inference_us": bad})


def test_inference_is_timed_on_the_compacted_network(monkeypatch):
    """A network with masked neurons is timed as sciprune.compact makes it (what export writes)."""
    import torch

    import sciprune
    import sciprune.inference_time as it
    from sciprune.study_diagnostics import network_diagnostics

    seen = []
    monkeypatch.setattr(it, "forward_time_us", lambda net, X, batch: seen.append(
        [m.out_features for m in net if isinstance(m, torch.nn.Linear)]) or 1.0)
    model = sciprune.MLP(2, [6, 6], 1, "tanh", seed=0).double()
    sciprune.prune(model, "neuron-magnitude", 0.5, scope="layer")

    class Task:
        X_test = torch.rand(5, 2, dtype=torch.float64)
        X_train, Y_train = X_test, torch.rand(5, 1, dtype=torch.float64)
        task = "regression"

    out = network_diagnostics(model, Task(), hessian_top=0, psp=False, inference=True)
    assert out["inference_us"] == [1.0, 1.0] and seen == [[3, 3, 1], [3, 3, 1]]
