"""Coordinate-regression tasks and noise laws."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from sciprune.data import NoiseModel, coordinate_task, grid_inputs, split_indices
from sciprune.errors import SciPruneError
from sciprune.scaling import Scaling


def make_sample(nt: int = 11, nx: int = 16) -> xr.DataArray:
    t = np.linspace(0.0, 500.0, nt)
    x = (np.arange(nx) + 0.5) / nx
    u = np.exp(-x[None, :] * (1 + t[:, None] / 100)) + 0.1
    return xr.DataArray(u.astype(np.float32), dims=("t", "x"), coords={"t": t, "x": x}, name="u",
                        attrs={"file": "mem.h5", "sample": 3, "layout": "groups", "group": "0003"})


# ----------------------------------------------------------------------------- noise
N_BIG = 200_000


def test_noise_seeded_reproducible_and_input_untouched():
    y = np.linspace(0, 1, 1000)
    y0 = y.copy()
    for kind in ("uniform", "gaussian", "relative-gaussian"):
        m = NoiseModel(kind, 0.1)
        a, b, c = m.apply(y, seed=5), m.apply(y, seed=5), m.apply(y, seed=6)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)
        np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(NoiseModel().apply(y, seed=0), y)


def test_noise_keeps_float_dtype():
    assert NoiseModel("gaussian", 0.1).apply(np.ones(3, np.float32), seed=0).dtype == np.float32
    assert NoiseModel("gaussian", 0.1).apply(np.ones(3, np.int64), seed=0).dtype == np.float64


def test_uniform_noise_statistics():
    a = 0.005
    d = NoiseModel("uniform", a).apply(np.zeros(N_BIG), seed=1)
    assert d.min() >= -a and d.max() <= a and d.min() < -0.99 * a and d.max() > 0.99 * a
    assert abs(d.mean()) < 4 * a / math.sqrt(3 * N_BIG)
    assert d.var() == pytest.approx(a**2 / 3, rel=0.02)
    assert NoiseModel("uniform", a).std == pytest.approx(a / math.sqrt(3))


def test_gaussian_noise_statistics():
    d = NoiseModel("gaussian", 0.2).apply(np.full(N_BIG, 3.0), seed=2) - 3.0
    assert abs(d.mean()) < 4 * 0.2 / math.sqrt(N_BIG)
    assert d.std() == pytest.approx(0.2, rel=0.01)


def test_relative_gaussian_statistics():
    y = np.where(np.arange(N_BIG) % 2 == 0, 2.0, -0.5)
    noisy = NoiseModel("relative-gaussian", 0.1).apply(y, seed=3)
    rel = noisy / y - 1.0
    assert abs(rel.mean()) < 4 * 0.1 / math.sqrt(N_BIG)
    assert rel.std() == pytest.approx(0.1, rel=0.01)
    np.testing.assert_array_equal(NoiseModel("relative-gaussian", 0.5).apply(np.zeros(5), seed=0), 0.0)


@pytest.mark.parametrize(
    "kind, level, match",
    [
        ("laplace", 0.1, r"noise kind must be one of 'none', 'uniform', 'gaussian', 'relative-gaussian', got 'laplace'"),
        ("uniform", -0.1, "non-negative"),
        ("gaussian", float("nan"), "non-negative finite"),
        ("gaussian", "abc", "non-negative finite"),
        ("none", 0.1, "must be 0 for kind 'none'"),
    ],
)
def test_noise_validation(kind, level, match):
    with pytest.raises(SciPruneError, match=match):
        NoiseModel(kind, level)


def test_noise_dict_and_parse_round_trip():
    m = NoiseModel("relative-gaussian", 0.02)
    assert NoiseModel.from_dict(json.loads(json.dumps(m.to_dict()))) == m
    assert NoiseModel.parse("uniform:0.005") == NoiseModel("uniform", 0.005)
    assert NoiseModel.parse("none") == NoiseModel()
    with pytest.raises(SciPruneError, match="unknown keys"):
        NoiseModel.from_dict({"kind": "uniform", "level": 0.1, "amp": 2})


# ----------------------------------------------------------------------------- grid and splits
def test_grid_inputs_order_rebuilds_field():
    s = make_sample(5, 7)
    g = grid_inputs(s)
    assert g.shape == (35, 2) and g.dtype == np.float64
    np.testing.assert_array_equal(g[:, 0].reshape(5, 7), np.broadcast_to(s["x"].values, (5, 7)))
    np.testing.assert_array_equal(g[:, 1].reshape(5, 7), np.broadcast_to(s["t"].values[:, None], (5, 7)))
    # a transposed sample gives the same points
    np.testing.assert_array_equal(grid_inputs(s.transpose("x", "t")), g)


def test_random_split_partition_and_seed():
    s = make_sample()
    task = coordinate_task(s, seed=4, test_fraction=0.25, val_fraction=0.15)
    n = 11 * 16
    p = task.provenance
    assert p["n_train"] + p["n_val"] + p["n_test"] == n
    assert p["n_test"] == round(0.25 * n) and p["n_val"] == round(0.15 * n)
    assert task.X_train.shape == (p["n_train"], 2) and task.Y_test.shape == (p["n_test"], 1)
    rows = torch.cat([task.X_train, task.X_val, task.X_test]).double()
    phys = task.input_scaling.inverse(rows.numpy())
    assert len({tuple(r) for r in np.round(phys, 9)}) == n  # disjoint and covering
    again = coordinate_task(s, seed=4, test_fraction=0.25, val_fraction=0.15)
    assert torch.equal(again.X_test, task.X_test) and torch.equal(again.Y_train, task.Y_train)
    other = coordinate_task(s, seed=5, test_fraction=0.25, val_fraction=0.15)
    assert not torch.equal(other.X_test, task.X_test)


def test_time_split_extrapolates():
    s = make_sample(nt=20)
    task = coordinate_task(s, split="time", test_fraction=0.2, val_fraction=0.1, seed=1)
    p = task.provenance
    t_of = lambda X: task.input_scaling.inverse(X.double().numpy())[:, 1]  # noqa: E731
    assert t_of(task.X_test).min() > max(t_of(task.X_train).max(), t_of(task.X_val).max())
    assert p["split"] == "time" and p["n_test"] == 4 * 16 and p["t_split"] == pytest.approx(s["t"].values[15])
    levels = np.unique(np.round(t_of(task.X_test), 2))
    np.testing.assert_allclose(levels, s["t"].values[16:], atol=0.01)
    explicit = coordinate_task(s, split="time", t_split=250.0)
    assert (t_of(explicit.X_test) > 250.0 - 1e-9).all() and explicit.provenance["t_split"] == 250.0
    with pytest.raises(SciPruneError, match="inside the time range"):
        coordinate_task(s, split="time", t_split=600.0)


def test_noise_applied_clean_kept_and_scaling_recorded():
    s = make_sample()
    noise = NoiseModel("uniform", 0.01)
    task = coordinate_task(s, noise=noise, seed=2, dtype=torch.float64)
    out = task.output_scaling
    for part in ("train", "val", "test"):
        y = out.inverse(getattr(task, f"Y_{part}").numpy())
        yc = out.inverse(getattr(task, f"Y_{part}_clean").numpy())
        d = y - yc
        assert np.abs(d).max() <= 0.01 + 1e-9 and np.abs(d).max() > 0.005
        # clean targets equal the sample's values at those inputs
        X = task.input_scaling.inverse(getattr(task, f"X_{part}").numpy())
        expect = s.sel(x=xr.DataArray(X[:, 0]), t=xr.DataArray(X[:, 1]), method="nearest").values
        np.testing.assert_allclose(yc[:, 0], expect, rtol=0, atol=1e-6)
    # output scaling from the noisy training targets only
    y_train = out.inverse(task.Y_train.numpy())
    assert out.shift[0] == pytest.approx(y_train.mean()) and out.scale[0] == pytest.approx(y_train.std())
    assert task.Y_train.mean().item() == pytest.approx(0.0, abs=1e-9)
    # inputs in [-1, 1] over the grid; scalings serialise
    X_all = torch.cat([task.X_train, task.X_val, task.X_test])
    assert X_all.min().item() == pytest.approx(-1) and X_all.max().item() == pytest.approx(1)
    for sc in (task.input_scaling, task.output_scaling):
        back = Scaling.from_dict(json.loads(json.dumps(sc.to_dict())))
        np.testing.assert_array_equal(back.shift, sc.shift)
    p = task.provenance
    assert p["noise"] == {"kind": "uniform", "level": 0.01} and p["noise_seed"] == 2 and p["split_seed"] == 2
    assert p["source"] == {"file": "mem.h5", "sample": 3, "group": "0003", "layout": "groups"}
    json.dumps(p)  # JSON-serialisable
    assert task.X_train.dtype == torch.float64


def test_noise_realisation_independent_of_split():
    s = make_sample()
    noise = NoiseModel("gaussian", 0.05)
    a = coordinate_task(s, noise=noise, seed=0, noise_seed=9)
    b = coordinate_task(s, noise=noise, seed=1, noise_seed=9, split="time")

    def residual_by_point(task):
        out = {}
        for part in ("train", "val", "test"):
            X = task.input_scaling.inverse(getattr(task, f"X_{part}").double().numpy())
            d = task.output_scaling.inverse(getattr(task, f"Y_{part}").double().numpy()) - \
                task.output_scaling.inverse(getattr(task, f"Y_{part}_clean").double().numpy())
            out.update({tuple(np.round(x, 6)): float(v) for x, v in zip(X, d[:, 0])})
        return out

    ra, rb = residual_by_point(a), residual_by_point(b)
    assert ra.keys() == rb.keys()
    assert max(abs(ra[k] - rb[k]) for k in ra) < 1e-5


def test_coordinate_task_validation():
    s = make_sample()
    with pytest.raises(SciPruneError, match="split must be one of"):
        coordinate_task(s, split="space")
    with pytest.raises(SciPruneError, match="test_fraction must be in"):
        coordinate_task(s, test_fraction=1.5)
    with pytest.raises(SciPruneError, match="sum must be below 1"):
        coordinate_task(s, test_fraction=0.6, val_fraction=0.4)
    with pytest.raises(SciPruneError, match="dims"):
        coordinate_task(s.expand_dims(var=2))
    with pytest.raises(SciPruneError, match="NoiseModel"):
        coordinate_task(s, noise="uniform")
    bad = s.copy()
    bad[0, 0] = np.nan
    with pytest.raises(SciPruneError, match="3 of mem.h5"):
        coordinate_task(bad)


@settings(max_examples=40, deadline=None)
@given(
    nt=st.integers(2, 12), nx=st.integers(1, 12),
    test=st.floats(0, 0.6), val=st.floats(0, 0.39), seed=st.integers(0, 2**31),
    split=st.sampled_from(["random", "time"]),
)
def test_splits_partition_points(nt, nx, test, val, seed, split):
    t = np.linspace(0, 1, nt)
    try:
        idx, t_split = split_indices(t, nx, split=split, test_fraction=test, val_fraction=val, seed=seed)
    except SciPruneError:
        return  # fractions leaving no training point (tiny grids) are refused with a message
    allidx = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert np.array_equal(np.sort(allidx), np.arange(nt * nx))
    assert len(idx["train"]) >= 1
    if split == "time":
        pt = np.repeat(t, nx)
        assert len(idx["test"]) >= nx and pt[idx["test"]].min() > pt[idx["train"]].max()
        assert (pt[idx["test"]] > t_split).all() and (pt[idx["train"]] <= t_split).all()
    else:
        n = nt * nx
        assert len(idx["test"]) == math.floor(test * n + 0.5) and len(idx["val"]) == math.floor(val * n + 0.5)


@settings(max_examples=20, deadline=None)
@given(nt=st.integers(4, 30), nx=st.integers(2, 30), seed=st.integers(0, 1000))
def test_random_split_always_has_train_when_fractions_allow(nt, nx, seed):
    idx, _ = split_indices(np.arange(nt), nx, test_fraction=0.2, val_fraction=0.1, seed=seed)
    assert len(idx["train"]) >= 0.6 * nt * nx
