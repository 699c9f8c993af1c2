"""Loss lines and maps: exact endpoints, orthogonal directions, the walker-evaluated grid vs a plain loop; plots."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sciprune
from sciprune.diagnostics import loss_line, loss_map, plane_directions, psp_entropy
from sciprune.diagnostics.plots import plot_eigenvalues, plot_loss_line, plot_loss_map
from sciprune.errors import SciPruneError
from sciprune.masks import set_masks
from sciprune.results import read_dataset, write_dataset


def _close(a, b, *, rtol=1e-12, atol=1e-13, what=""):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    bad = ~np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
    assert not bad.any(), f"{what}: differ at {np.argwhere(bad)[:5].tolist()}: {a[bad][:5]} vs {b[bad][:5]}"


@torch.no_grad()
def _own_loss(model, X, Y):
    out = model(X)
    return float(F.mse_loss(out, Y) if Y.is_floating_point() else F.cross_entropy(out, Y))


@torch.no_grad()
def _model_at(model_a, params):
    """A fresh dense copy of ``model_a`` (no masks) carrying ``params``."""
    m = copy.deepcopy(model_a)
    sciprune.masks.remove_masks(m)
    for k, v in params.items():
        m.get_parameter(k).copy_(v)
    return m


@pytest.fixture
def regression():
    torch.manual_seed(0)
    a = sciprune.MLP(2, [7, 6], 2, "tanh", seed=0).double()
    b = sciprune.MLP(2, [7, 6], 2, "tanh", seed=1).double()
    X, Y = torch.randn(33, 2, dtype=torch.float64), torch.randn(33, 2, dtype=torch.float64)
    Xt, Yt = torch.randn(17, 2, dtype=torch.float64), torch.randn(17, 2, dtype=torch.float64)
    return a, b, (X, Y), (Xt, Yt)


@pytest.fixture
def classification():
    torch.manual_seed(1)
    a = sciprune.MLP(5, [8, 6], 3, "relu", seed=2).double()
    b = sciprune.MLP(5, [8, 6], 3, "relu", seed=3).double()
    X, Y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 3, (30,))
    return a, b, (X, Y)


def test_line_endpoints_are_the_two_models(regression, classification):
    a, b, (X, Y), (Xt, Yt) = regression
    ds = loss_line(a, b, (X, Y), n_points=5, extend=(0.3, 0.5), test_data=(Xt, Yt))
    assert ds.attrs["loss"] == "mse"
    alpha = ds["alpha"].values
    assert alpha[0] == -0.5 and alpha[-1] == 1.5 and {0.0, 1.0} <= set(alpha.tolist())
    for x, m in ((0.0, a), (1.0, b)):
        _close(ds["train_loss"].sel(alpha=x), _own_loss(m, X, Y))
        _close(ds["test_loss"].sel(alpha=x), _own_loss(m, Xt, Yt))
    a, b, (X, Y) = classification
    ds = loss_line(a, b, (X, Y), n_points=3, batch_size=7, points_per_pass=2)
    assert ds.attrs["loss"] == "cross_entropy"
    _close(ds["train_loss"].sel(alpha=0.0), _own_loss(a, X, Y))
    _close(ds["train_loss"].sel(alpha=1.0), _own_loss(b, X, Y))


def test_directions_are_orthogonal_and_seeded(regression):
    a, b, *_ = regression
    d1, d2 = plane_directions(a, b, seed=4)
    dot = lambda u, v: sum(float((u[k] * v[k]).sum()) for k in u)
    n1, n2 = dot(d1, d1) ** 0.5, dot(d2, d2) ** 0.5
    assert abs(dot(d1, d2)) <= 1e-13 * n1 * n2 and n2 == pytest.approx(n1, rel=1e-13)
    for k, p in a.named_parameters():
        _close(d1[k], dict(b.named_parameters())[k].detach() - p.detach())
    again, other = plane_directions(a, b, seed=4)[1], plane_directions(a, b, seed=5)[1]
    assert all(torch.equal(again[k], d2[k]) for k in d2) and not torch.equal(other["linear0.weight"], d2["linear0.weight"])


def test_filter_normalised_direction(regression):
    a, b, *_ = regression
    d1, d2 = plane_directions(a, b, seed=0, filter_normalize=True)
    for name, p in a.named_parameters():
        if name.endswith("weight"):
            _close(d2[name].norm(dim=1), p.detach().norm(dim=1), what=name)
            _close((d2[name] * d1[name]).sum(1), 0.0, atol=1e-13, what=name)  # orthogonal row by row
        else:
            assert (d2[name] == 0).all()
    ds = loss_map(a, b, (regression[2]), n=(3, 3), filter_normalize=True)
    assert ds.attrs["degenerate_rows"] == 0 and ds.attrs["filter_normalize"] is True


def test_map_solutions_and_walker_grid_equals_loop(regression):
    a, b, (X, Y), (Xt, Yt) = regression
    ds = loss_map(a, b, (X, Y), n=(4, 3), span=((-0.5, 1.5), (-0.7, 0.7)), seed=2, test_data=(Xt, Yt),
                  points_per_pass=5, batch_size=10)
    assert ds.sizes["alpha"] == 6 and ds.sizes["beta"] == 3  # 0 and 1 added; 0 already a grid point
    for (x, y), m in (((0.0, 0.0), a), ((1.0, 0.0), b)):
        _close(ds["train_loss"].sel(alpha=x, beta=y), _own_loss(m, X, Y))
        _close(ds["test_loss"].sel(alpha=x, beta=y), _own_loss(m, Xt, Yt))
    d1, d2 = plane_directions(a, b, seed=2)
    pa = {k: v.detach() for k, v in a.named_parameters()}
    for x in ds["alpha"].values:
        for y in ds["beta"].values:
            m = _model_at(a, {k: pa[k] + x * d1[k] + y * d2[k] for k in pa})
            _close(ds["train_loss"].sel(alpha=x, beta=y), _own_loss(m, X, Y), rtol=1e-11, what=f"({x}, {y})")
            _close(ds["test_loss"].sel(alpha=x, beta=y), _own_loss(m, Xt, Yt), rtol=1e-11, what=f"({x}, {y})")


def test_map_psp_statistics_equal_psp_entropy_at_each_point(classification):
    a, b, (X, Y) = classification
    ds = loss_map(a, b, (X, Y), n=(3, 2), span=((0.0, 1.0), (0.0, 1.0)), psp=True, points_per_pass=4)
    line = loss_line(a, b, (X, Y), n_points=2, psp=True)
    d1, d2 = plane_directions(a, b, seed=0)
    pa = {k: v.detach() for k, v in a.named_parameters()}
    for x, y in ((0.0, 0.0), (1.0, 0.0), (0.5, 1.0)):
        ref = psp_entropy(_model_at(a, {k: pa[k] + x * d1[k] + y * d2[k] for k in pa}), (X, Y))
        for v in ("mean_psp_sq", "mean_entropy", "mean_pair_entropy"):
            _close(ds[v].sel(alpha=x, beta=y), ref[v], rtol=1e-10, what=f"{v} at ({x}, {y})")
            if y == 0.0:
                _close(line[v].sel(alpha=x), ref[v], rtol=1e-10, what=f"line {v} at {x}")


def test_psp_on_a_tanh_model_gives_norms_only(regression):
    a, b, (X, Y), _ = regression
    ds = loss_line(a, b, (X, Y), n_points=3, psp=True)
    assert "mean_psp_sq" in ds and "mean_entropy" not in ds and list(ds["layer"].values) == ["linear0", "linear1"]


def test_pruned_model_is_evaluated_in_dense_space(classification):
    a, b, (X, Y) = classification
    gen = torch.Generator().manual_seed(0)
    set_masks(a, {k: torch.rand(p.shape, generator=gen) > 0.5 for k, p in a.named_parameters() if k.endswith("weight")})
    ds = loss_line(a, b, (X, Y), n_points=3)
    _close(ds["train_loss"].sel(alpha=0.0), _own_loss(a, X, Y))
    pa, pb = ({k: v.detach() for k, v in m.named_parameters()} for m in (a, b))
    mid = _model_at(a, {k: 0.5 * pa[k] + 0.5 * pb[k] for k in pa})  # dense: pruned entries become nonzero
    assert (mid.linear0.weight != 0).all()
    _close(ds["train_loss"].sel(alpha=0.5), _own_loss(mid, X, Y), rtol=1e-11)


def test_bad_input_is_refused(regression, classification):
    a, b, data, _ = regression
    with pytest.raises(SciPruneError, match="same architecture"):
        loss_line(a, sciprune.MLP(2, [7, 5], 2, "tanh").double(), data)
    with pytest.raises(SciPruneError, match="identical parameters"):
        loss_map(a, copy.deepcopy(a), data)
    with pytest.raises(SciPruneError, match="span must be"):
        loss_map(a, b, data, span=((0.2, 1.5), (-1.0, 1.0)))
    with pytest.raises(SciPruneError, match="n_points must be"):
        loss_line(a, b, data, n_points=1)
    with pytest.raises(SciPruneError, match="loss must be"):
        loss_line(a, b, data, loss="l1")
    with pytest.raises(SciPruneError, match="cross_entropy' needs integer labels"):
        loss_line(a, b, data, loss="cross_entropy")


def test_results_round_trip_and_plots(classification, tmp_path):
    a, b, (X, Y) = classification
    line = loss_line(a, b, (X, Y), n_points=5, extend=(0.25, 0.25), test_data=(X, Y))
    grid = loss_map(a, b, (X, Y), n=(5, 4), psp=True)
    back = read_dataset(write_dataset(grid, tmp_path / "map.nc"))
    _close(back["train_loss"], grid["train_loss"])
    paths = [
        plot_loss_line(line, tmp_path / "line.png"),
        plot_loss_map(grid, tmp_path / "map.png"),
        plot_loss_map(grid, tmp_path / "entropy.png", var="mean_pair_entropy", layer="linear0"),
        plot_eigenvalues(np.array([30.0, 12.0, 5.0, 1.0, 0.5]), tmp_path / "eig1.png"),
        plot_eigenvalues({"G": [900.0, 300.0, 80.0], "1-S": [200.0, 90.0, -3.0]}, tmp_path / "eig2.png"),
    ]
    for p in paths:
        assert p.stat().st_size > 1000, p
    with pytest.raises(SciPruneError, match="var must be"):
        plot_loss_map(grid, tmp_path / "x.png", var="nope")


def _per_point_losses(model, points, X, Y, loss):
    """Reference: the loss of every stacked point by a plain ``functional_call`` of the model, float64."""
    fn = F.mse_loss if loss == "mse" else F.cross_entropy
    P = next(iter(points.values())).shape[0]
    with torch.no_grad():
        return np.array([float(fn(torch.func.functional_call(model, {k: v[p] for k, v in points.items()}, (X,)), Y))
                         for p in range(P)])


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_walker_evaluation_equals_functional_call_loop(loss):
    """Line and plane (chunks that do not divide the points, several batches, a Linear without bias,
    a non-fused activation) against a per-point ``torch.func.functional_call`` loop, float64."""
    torch.manual_seed(3)
    make = lambda: torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.GELU(), torch.nn.Linear(6, 5, bias=False),
                                       torch.nn.Tanh(), torch.nn.Linear(5, 4)).double()
    a, b = make(), make()
    X = torch.randn(23, 3, dtype=torch.float64)
    Y = torch.randn(23, 4, dtype=torch.float64) if loss == "mse" else torch.randint(0, 4, (23,))
    pa, pb = ({k: v.detach() for k, v in m.named_parameters()} for m in (a, b))
    line = loss_line(a, b, (X, Y), loss=loss, n_points=6, extend=(0.4, 0.2), batch_size=9, points_per_pass=4)
    col = lambda v, k: torch.from_numpy(np.array(v, dtype=np.float64)).reshape(-1, *[1] * pa[k].ndim)
    al = line["alpha"].values
    pts = {k: col(1 - al, k) * pa[k] + col(al, k) * pb[k] for k in pa}
    _close(line["train_loss"], _per_point_losses(a, pts, X, Y, loss), what="line")
    grid = loss_map(a, b, (X, Y), loss=loss, n=(4, 3), seed=1, batch_size=10, points_per_pass=5)
    d1, d2 = plane_directions(a, b, seed=1)
    A, Bt = (v.ravel() for v in np.meshgrid(grid["alpha"].values, grid["beta"].values, indexing="ij"))
    pts = {k: col(1 - A, k) * pa[k] + col(A, k) * pb[k] + col(Bt, k) * d2[k] for k in pa}
    _close(grid["train_loss"].values.ravel(), _per_point_losses(a, pts, X, Y, loss), what="plane")


def test_rebound_walker_equals_a_fresh_one():
    """``Walker.bind`` (the landscape's next chunk of points) gives what a walker built on those points gives."""
    from sciprune.chain import Walker

    m = sciprune.MLP(3, [5], 2, "relu", seed=0).double()
    stack = lambda s: {k: v.detach() + s * torch.randn(4, *v.shape, dtype=torch.float64) for k, v in m.named_parameters()}
    first, second = stack(1.0), stack(2.0)
    x = torch.randn(4, 7, 3, dtype=torch.float64)
    walker = Walker(m, first)
    walker.forward(x)
    assert torch.equal(walker.bind(second).forward(x)[1], Walker(m, second).forward(x)[1])
    with pytest.raises(SciPruneError, match="stacked"):
        Walker(m).bind(second)


def test_non_elementwise_module_is_refused(regression):
    a, b, data, _ = regression
    with_softmax = lambda m: torch.nn.Sequential(*m, torch.nn.Softmax(dim=1))
    with pytest.raises(SciPruneError, match="not an elementwise activation"):
        loss_line(with_softmax(a), with_softmax(b), data)
