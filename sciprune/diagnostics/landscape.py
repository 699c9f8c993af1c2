"""Loss landscapes between two solutions: a line through both and a plane through both.

Following Goodfellow et al. (2015, "Qualitatively characterizing neural network optimization
problems"), as used by the PSP-entropy paper (Tartaglione et al., ICANN 2020, Figs. 2-4): the loss
along theta(alpha) = (1 - alpha) theta_a + alpha theta_b, and on the plane
theta(alpha, beta) = (1 - alpha) theta_a + alpha theta_b + beta d2 with d1 = theta_b - theta_a and
a seeded random direction d2 orthogonal to d1 (optionally filter-normalised, Li et al. 2018,
"Visualizing the loss landscape of neural nets"). Both solutions lie exactly at (0, 0) and (1, 0).

Evaluation is in the dense parameter space: a pruned model is its weights with zeros in them, the
points in between are dense, and no mask (nor any forward hook) is applied: a chunk of points is
evaluated at once as the members of a stack by the one chain walker (:class:`sciprune.chain.Walker`,
``baddbmm`` per Linear on parameters ``{name: (P, *shape)}``, the data broadcast to every point), with
the loss terms of :func:`sciprune.losses.value`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import xarray as xr
from torch import nn

from .. import losses
from ..batches import Batches, as_batches
from ..chain import Walker
from ..errors import SciPruneError
from ._psp_counts import Counts, HiddenLayer, hidden_layers, pair_mean, resolve_classes

__all__ = ["loss_line", "loss_map", "plane_directions", "plane_axes", "MAX_POINTS"]

_ELEMENTS_PER_PASS = 1 << 25  # Linear outputs (and PSPs) of a pass when batch_size is None (the walker
# also keeps each activation's output in a buffer: about twice this many elements are held)


# ------------------------------------------------------------------------------- parameter space
def _dense_params(model: nn.Module) -> dict[str, torch.Tensor]:
    """Name-keyed weights and biases of the Linear children as the forward pass sees them."""
    out = {}
    for name, m in model.named_children():
        if isinstance(m, nn.Linear):
            out[f"{name}.weight"] = m.weight.detach()
            if m.bias is not None:
                out[f"{name}.bias"] = m.bias.detach()
    return out


def _check_pair(model_a: nn.Module, model_b: nn.Module) -> None:
    for m in (model_a, model_b):
        Walker(m)  # an nn.Sequential of Linear layers and elementwise activations, or a clear error

    def sig(model):
        return [(n, type(c).__name__, c.extra_repr()) for n, c in model.named_children()]

    if sig(model_a) != sig(model_b):
        raise SciPruneError(
            f"model_a and model_b must have the same architecture, got {sig(model_a)} and {sig(model_b)}; "
            "compare models built with the same sizes and activation"
        )


def _dot(u: dict[str, torch.Tensor], v: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum((u[k].to(torch.float64) * v[k].to(torch.float64)).sum() for k in u)


def plane_directions(
    model_a: nn.Module, model_b: nn.Module, *, seed: int = 0, filter_normalize: bool = False
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The two directions of :func:`loss_map`: d1 = theta_b - theta_a and a random d2 orthogonal to d1.

    d2 is a standard Gaussian (CPU ``torch.Generator`` seeded with ``seed``, float64, parameters in
    module order). Plain: d2 <- g - (<g, d1>/<d1, d1>) d1 (Gram-Schmidt), scaled so ||d2|| = ||d1||.
    ``filter_normalize`` (Li et al. 2018): each row (the incoming weights of a neuron, a "filter") is
    made orthogonal to the same row of d1 and scaled to the norm of the same row of theta_a, so that
    d2 is orthogonal to d1 row by row (hence overall) and its row norms equal theta_a's; bias
    directions are zero (Li et al.'s ``ignore='biasbn'``). A row that cannot be both (a one-input
    row, or a row of d1 parallel to g) gets a zero direction; ``plane_directions`` does not count
    them, :func:`loss_map` reports their number in ``attrs["degenerate_rows"]``.

    Returns:
        ``(d1, d2)``: name-keyed tensors shaped, typed and placed like the parameters of ``model_a``.
    """
    d1, d2, _ = _directions(model_a, model_b, seed=seed, filter_normalize=filter_normalize)
    return d1, d2


def _directions(model_a, model_b, *, seed: int, filter_normalize: bool):
    _check_pair(model_a, model_b)
    pa, pb = _dense_params(model_a), _dense_params(model_b)
    f64 = {k: v.to(torch.float64) for k, v in pa.items()}
    d1 = {k: pb[k].to(torch.float64) - f64[k] for k in pa}
    n1 = float(_dot(d1, d1)) ** 0.5
    if n1 == 0.0:
        raise SciPruneError("model_a and model_b have identical parameters; the line and plane through them are undefined")
    gen = torch.Generator().manual_seed(int(seed))
    g = {k: torch.randn(v.shape, generator=gen, dtype=torch.float64).to(v.device) for k, v in f64.items()}
    degenerate = 0
    if not filter_normalize:
        g = {k: g[k] - float(_dot(g, d1)) / n1**2 * d1[k] for k in g}
        scale = n1 / float(_dot(g, g)) ** 0.5
        d2 = {k: v * scale for k, v in g.items()}
    else:
        d2 = {}
        for k, G in g.items():
            if G.ndim < 2:
                d2[k] = torch.zeros_like(G)
                continue
            G, D, A = G.flatten(1), d1[k].flatten(1), f64[k].flatten(1)
            dd = (D * D).sum(1)
            coef = torch.where(dd > 0, (G * D).sum(1) / dd.clamp_min(1e-300), 0.0)
            R = G - coef[:, None] * D
            rn, target = R.norm(dim=1), A.norm(dim=1)
            ok = rn > 1e-12 * G.norm(dim=1)
            degenerate += int((~ok & (target > 0)).sum())
            d2[k] = (R * torch.where(ok, target / rn.clamp_min(1e-300), 0.0)[:, None]).reshape(g[k].shape)
    like = {k: {"dtype": v.dtype, "device": v.device} for k, v in pa.items()}
    return {k: v.to(**like[k]) for k, v in d1.items()}, {k: v.to(**like[k]) for k, v in d2.items()}, degenerate


# ---------------------------------------------------------------------------------------- grids
#: Most points of one line or plane (each is a full pass over the data).
MAX_POINTS = 10**6


def _line_alphas(n_points: int, extend: tuple[float, float]) -> np.ndarray:
    if isinstance(n_points, bool) or not isinstance(n_points, int) or not 2 <= n_points <= MAX_POINTS:
        raise SciPruneError(f"n_points must be an integer in [2, {MAX_POINTS}] (points from alpha = 0 to 1), "
                            f"got {n_points!r}")
    if len(extend) != 2 or not all(math.isfinite(float(e)) for e in extend) or min(extend) < 0:
        raise SciPruneError(f"extend must be two non-negative margins (before 0, after 1), got {extend!r}")
    h = n_points - 1
    lo, hi = (math.ceil(float(e) * h - 1e-9) for e in extend)
    return np.arange(-lo, h + hi + 1) / h  # k / h is exactly 0 at k = 0 and exactly 1 at k = h


def plane_axes(n: tuple[int, int], span: tuple[tuple[float, float], tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """The alpha and beta values of :func:`loss_map` for ``n`` points over ``span`` (checked here,
    so a caller can refuse bad options before computing anything)."""
    try:
        (a_lo, a_hi), (b_lo, b_hi) = ((float(lo), float(hi)) for lo, hi in span)
        n_a, n_b = n
    except (TypeError, ValueError):
        raise SciPruneError(f"n and span must give (alpha, beta) values, got n={n!r}, span={span!r}") from None
    alphas = _axis(a_lo, a_hi, n_a, (0.0, 1.0), "alpha")
    betas = _axis(b_lo, b_hi, n_b, (0.0,), "beta")
    if len(alphas) * len(betas) > MAX_POINTS:
        raise SciPruneError(f"a plane of {len(alphas)} x {len(betas)} points is more than {MAX_POINTS:,}; use fewer points")
    return alphas, betas


def _axis(lo: float, hi: float, n: int, must: tuple[float, ...], name: str) -> np.ndarray:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= MAX_POINTS:
        raise SciPruneError(f"the number of {name} points must be an integer in [2, {MAX_POINTS}], got {n!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and lo <= min(must) and max(must) <= hi):
        raise SciPruneError(f"the {name} span must be (lo, hi) with lo < hi containing {list(must)}, got {(lo, hi)}")
    v = np.linspace(lo, hi, int(n))
    step = (hi - lo) / (n - 1)
    for m in must:
        j = int(np.argmin(np.abs(v - m)))
        if abs(v[j] - m) <= 1e-6 * step:
            v[j] = m
        else:
            v = np.append(v, m)
    return np.unique(v)


# ----------------------------------------------------------------------------------- evaluation
def _loss_sum(out: torch.Tensor, Y: torch.Tensor, loss: str) -> tuple[torch.Tensor, int]:
    """Summed loss of every point (out: (P, B, d)), accumulated in float64, and the count it is averaged over."""
    terms = losses.value(loss, out, losses.targets(loss, out, Y), "none")
    return terms.sum(tuple(range(1, terms.ndim)), dtype=torch.float64), losses.count(loss, out)


class _Evaluator:
    """Loss (and PSP statistics) of a stack of parameter points, ``chunk`` points per pass of the walker."""

    def __init__(self, model: nn.Module, loss: str | None, data, *, batch_size, chunk: int, psp: bool, n_bins: int) -> None:
        if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
            raise SciPruneError(f"points_per_pass must be a positive integer, got {chunk!r}")
        p = next(model.parameters())
        self.device, self.dtype, self.chunk = p.device, p.dtype, chunk
        self.model, self.walker = model, None
        self.layers: list[HiddenLayer] = hidden_layers(model) if psp else []
        if psp and not self.layers:
            raise SciPruneError("psp=True needs a hidden layer (a Linear followed by an activation and another Linear)")
        width = sum(lay.width for lay in self.layers) + sum(m.out_features for m in model if isinstance(m, nn.Linear))
        self.rows = batch_size or max(64, _ELEMENTS_PER_PASS // (chunk * width))
        self.train = self._batches(data)
        Y0 = next(iter(self.train))[1]
        self.loss = losses.resolve(loss, Y0)
        self.relu = any(lay.relu for lay in self.layers)
        self.spec = resolve_classes(self.train, None, n_bins) if self.relu else None

    def _batches(self, data) -> Batches:
        return as_batches(data, device=self.device, dtype=self.dtype, batch_size=self.rows)

    @torch.no_grad()
    def __call__(self, points: dict[str, torch.Tensor], data: Batches, *, stats: bool) -> dict[str, np.ndarray]:
        """``{"loss": (P,)}`` plus, with ``stats``, ``mean_psp_sq``, ``mean_entropy``, ``mean_pair_entropy`` (P, L)."""
        P_all = next(iter(points.values())).shape[0]
        out: dict[str, list[np.ndarray]] = {"loss": []}
        for s in range(0, P_all, self.chunk):
            pts = {k: v[s : s + self.chunk] for k, v in points.items()}
            P = next(iter(pts.values())).shape[0]
            counts = None
            if stats:
                counts = Counts([lay.width for lay in self.layers], [lay.relu for lay in self.layers],
                                 self.spec.n if self.spec else 1, order2=self.relu, lead=(P,), device=self.device)
            walker = self.walker = Walker(self.model, pts) if self.walker is None else self.walker.bind(pts)
            total, count = torch.zeros(P, dtype=torch.float64, device=self.device), 0
            for X, Y in data:
                inputs, o = walker.forward(X.expand(P, *X.shape))  # o, the PSPs: buffers until the next batch
                t, c = _loss_sum(o, Y, self.loss)
                total, count = total + t, count + c
                if counts is not None:
                    labels = self.spec.of(Y) if self.spec else torch.zeros(X.shape[0], dtype=torch.long, device=X.device)
                    counts.add([walker.output_of(lay.index, inputs, o) for lay in self.layers], labels)
            out["loss"].append((total / count).cpu().numpy())
            if counts is not None:
                res = counts.finish()
                nan = torch.full((P,), torch.nan, dtype=torch.float64)
                means = {"mean_psp_sq": [r["psp_sq"].mean(-1).cpu() for r in res],
                         "mean_entropy": [r["entropy"].mean(-1).cpu() if "entropy" in r else nan for r in res],
                         "mean_pair_entropy": [pair_mean(r["pair_entropy"]).cpu() if "pair_entropy" in r else nan
                                               for r in res]}
                for key, v in means.items():
                    out.setdefault(key, []).append(torch.stack(v, -1).numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    def evaluate(self, points, test_data, *, psp: bool) -> dict[str, np.ndarray]:
        res = self(points, self.train, stats=psp)
        out = {"train_loss": res.pop("loss")}
        if test_data is not None:
            out["test_loss"] = self(points, self._batches(test_data), stats=False)["loss"]
        if psp and not self.relu:  # entropies are defined for ReLU layers only
            res.pop("mean_entropy"), res.pop("mean_pair_entropy")
        return {**out, **res}

    def attrs(self, psp: bool) -> dict:
        a = {"loss": self.loss, "parameter_space": "dense (pruned weights are zeros; no masks applied)"}
        if psp:
            a["psp"] = "mean over neurons of E[z^2] (PSP = pre-activation) and of PSP-entropies (bits), training data"
            if self.spec is not None:
                a.update(self.spec.attrs())
        return a


def _stack(weights: list[tuple[np.ndarray, dict[str, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """sum_j coef_j[:, None...] * vec_j for name-keyed vectors: one stacked point per coefficient row."""
    out = {}
    for k, ref in weights[0][1].items():
        acc = None
        for coef, vec in weights:
            c = torch.as_tensor(coef, dtype=ref.dtype, device=ref.device).reshape(-1, *([1] * ref.ndim))
            v = vec[k].to(dtype=ref.dtype, device=ref.device)  # model_b may live elsewhere
            acc = c * v if acc is None else acc + c * v
        out[k] = acc
    return out


def _layer_vars(ds: xr.Dataset, res: dict[str, np.ndarray], dims: tuple[str, ...], shape: tuple[int, ...], ev: _Evaluator) -> xr.Dataset:
    for key in ("mean_psp_sq", "mean_entropy", "mean_pair_entropy"):
        if key in res:
            ds[key] = ((*dims, "layer"), res[key].reshape(*shape, -1))
    if "mean_psp_sq" in res:
        ds = ds.assign_coords(layer=[lay.name for lay in ev.layers], activation=("layer", [lay.activation for lay in ev.layers]))
    return ds


# ---------------------------------------------------------------------------------------- public
def loss_line(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    *,
    loss: str | None = None,
    n_points: int = 21,
    extend: tuple[float, float] = (0.0, 0.0),
    test_data=None,
    psp: bool = False,
    n_bins: int = 10,
    batch_size: int | None = None,
    points_per_pass: int = 8,
) -> xr.Dataset:
    """Loss along theta(alpha) = (1 - alpha) theta_a + alpha theta_b (Goodfellow et al. 2015).

    alpha = k / (n_points - 1) for whole k, from 0 to 1 (both exact, so the endpoints are the two
    models), extended by ``extend = (before, after)`` rounded up to whole steps.

    Args:
        model_a, model_b: chains of the same architecture (the parameters of ``model_a`` set device
            and dtype); pruned models count as their dense weights with zeros.
        data: training ``(X, Y)``, a TaskData (training split) or an iterable of batches.
        loss: ``"mse"`` or ``"cross_entropy"`` (None: mse for float targets, cross-entropy for labels),
            averaged as ``F.mse_loss`` / ``F.cross_entropy`` do.
        test_data: optional data for ``test_loss``.
        psp: also ``mean_psp_sq`` (every hidden layer) and ``mean_entropy``, ``mean_pair_entropy``
            (ReLU layers; NaN on others, absent when there is none) on the training data, as
            :func:`~sciprune.diagnostics.psp_entropy` defines them (classes from ``n_bins`` for
            regression targets).
        batch_size: rows per pass (None: chosen so a pass holds ~2^25 activations).
        points_per_pass: parameter points evaluated at once (as the members of a stack).

    Returns:
        Dataset on ``alpha`` with ``train_loss`` (and ``test_loss``; psp variables on (alpha, layer)).
    """
    _check_pair(model_a, model_b)
    alphas = _line_alphas(n_points, extend)
    ev = _Evaluator(model_a, loss, data, batch_size=batch_size, chunk=points_per_pass, psp=psp, n_bins=n_bins)
    pts = _stack([(1.0 - alphas, _dense_params(model_a)), (alphas, _dense_params(model_b))])
    res = ev.evaluate(pts, test_data, psp=psp)
    ds = xr.Dataset({k: ("alpha", v) for k, v in res.items() if v.ndim == 1}, coords={"alpha": alphas})
    ds = _layer_vars(ds, res, ("alpha",), (len(alphas),), ev)
    ds.attrs.update({**ev.attrs(psp), "path": "theta(alpha) = (1 - alpha) theta_a + alpha theta_b",
                     "solutions": {"model_a": 0.0, "model_b": 1.0}, "n_points": n_points, "extend": list(extend)})
    return ds


def loss_map(
    model_a: nn.Module,
    model_b: nn.Module,
    data,
    *,
    loss: str | None = None,
    n: tuple[int, int] = (21, 21),
    span: tuple[tuple[float, float], tuple[float, float]] = ((-0.5, 1.5), (-1.0, 1.0)),
    seed: int = 0,
    filter_normalize: bool = False,
    test_data=None,
    psp: bool = False,
    n_bins: int = 10,
    batch_size: int | None = None,
    points_per_pass: int = 8,
) -> xr.Dataset:
    """Loss on the plane theta(alpha, beta) = (1 - alpha) theta_a + alpha theta_b + beta d2.

    Equivalently theta_a + alpha d1 + beta d2 with d1 = theta_b - theta_a and d2 from
    :func:`plane_directions` (random, seeded, orthogonal to d1, ||d2|| = ||d1|| or filter-normalised):
    the map of Tartaglione et al. 2020 (Figs. 2-4). Solutions at (0, 0) and (1, 0), exactly.

    Args:
        n: points ``(n_alpha, n_beta)`` spread evenly over ``span``; alpha = 0, 1 and beta = 0 are
            added (or a grid point within 1e-6 step moved onto them), so an axis may be longer.
        span: ``((alpha_lo, alpha_hi), (beta_lo, beta_hi))``, containing [0, 1] and 0.
        seed, filter_normalize: as in :func:`plane_directions`.
        Others as in :func:`loss_line`.

    Returns:
        Dataset on ``(alpha, beta)`` with ``train_loss`` (and ``test_loss``; psp variables on
        (alpha, beta, layer)); ``attrs`` hold ``d1_norm``, ``d2_norm``, ``seed``, ``filter_normalize``.
    """
    alphas, betas = plane_axes(n, span)
    d1, d2, degenerate = _directions(model_a, model_b, seed=seed, filter_normalize=filter_normalize)
    ev = _Evaluator(model_a, loss, data, batch_size=batch_size, chunk=points_per_pass, psp=psp, n_bins=n_bins)
    A, Bt = (g.ravel() for g in np.meshgrid(alphas, betas, indexing="ij"))
    pts = _stack([(1.0 - A, _dense_params(model_a)), (A, _dense_params(model_b)), (Bt, d2)])
    res = ev.evaluate(pts, test_data, psp=psp)
    shape = (len(alphas), len(betas))
    ds = xr.Dataset({k: (("alpha", "beta"), v.reshape(shape)) for k, v in res.items() if v.ndim == 1},
                    coords={"alpha": alphas, "beta": betas})
    ds = _layer_vars(ds, res, ("alpha", "beta"), shape, ev)
    ds.attrs.update({
        **ev.attrs(psp), "plane": "theta(alpha, beta) = (1 - alpha) theta_a + alpha theta_b + beta d2, d2 orthogonal to theta_b - theta_a",
        "solutions": {"model_a": [0.0, 0.0], "model_b": [1.0, 0.0]}, "seed": int(seed),
        "filter_normalize": bool(filter_normalize), "d1_norm": float(_dot(d1, d1)) ** 0.5,
        "d2_norm": float(_dot(d2, d2)) ** 0.5, "degenerate_rows": degenerate,
    })
    return ds
