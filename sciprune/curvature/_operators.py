"""Hessian- and Gauss-Newton-vector products of the data-set loss, and scipy LinearOperators.

For parameters theta and the data-set loss ``L = (1/N) sum_n l_n(f(x_n; theta))`` (see ``_loss``):
Hessian ``H = d^2 L / d theta^2``; generalised Gauss-Newton ``G = (1/N) sum_n J_n^T H_n J_n`` with
``J_n = df(x_n)/d theta`` and ``H_n`` the output Hessian (Schraudolph 2002). Products are exact:
``H v`` by forward-over-reverse (``jvp`` of ``grad``, Pearlmutter 1994), ``G v`` by one ``jvp`` of
the network (``J v``), the output Hessian, and one ``vjp`` (``J^T``), all with ``torch.func`` and
summed over batches (so ``batch_size`` changes nothing but memory). Several vectors at once go
through ``vmap``. Operators act on the kept coordinates of a :class:`ParamSpace`: ``P M P``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from ..errors import SciPruneError
from ._loss import (
    check_loss,
    check_matrix,
    loss_sum,
    out_hessian_product,
    prepare,
    targets,
)
from ._space import ParamSpace

__all__ = ["CurvatureOperator", "ggn_operator", "ggnvp", "hessian_operator", "hvp"]


class CurvatureOperator(LinearOperator):
    """The Hessian or GGN of the data-set loss on a :class:`ParamSpace`, as a scipy LinearOperator.

    ``matvec`` takes and returns float64 numpy vectors of length ``space.dim``; the products run in
    the model's dtype and device. ``torch_matvec`` / ``torch_matmat`` do the same on tensors.
    ``n_products`` counts matrix-vector products (one pass over the data each); reset it freely.
    The data are normalised once, so a re-iterable (not a one-shot generator) must be passed.
    """

    def __init__(self, model: nn.Module, data, *, loss: str, matrix: str = "hessian",
                 names: Sequence[str] | str | None = None, batch_size: int | None = None) -> None:
        self.loss = check_loss(loss)
        self.matrix = check_matrix(matrix)
        self.model = model
        self.space = ParamSpace(model, names)
        self.batches = prepare(model, data, batch_size)
        self.n_products = 0
        super().__init__(dtype=np.dtype(np.float64), shape=(self.space.dim, self.space.dim))

    # --- torch side --------------------------------------------------------------------------
    def torch_matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``V M`` for a stack ``V`` (m, dim) of vectors (M is symmetric): (m, dim) in the model's dtype."""
        sp = self.space
        if V.ndim != 2 or V.shape[1] != sp.dim:
            raise SciPruneError(f"V must have shape (m, {sp.dim}), got {tuple(V.shape)}")
        V = V.to(device=sp.device, dtype=sp.dtype)
        tangents = {n: torch.stack(t) for n, t in zip(sp.names, zip(*[sp.unflatten(v).values() for v in V]))}
        fixed = {n: p.detach() for n, p in self.model.named_parameters()}
        params = {n: fixed[n] for n in sp.names}
        total, N = None, 0
        with torch.no_grad():
            for X, Y in self.batches:
                out = self._batch(fixed, params, tangents, X, Y)
                total = out if total is None else {n: total[n] + out[n] for n in sp.names}
                N += X.shape[0]
        self.n_products += V.shape[0]
        return torch.stack([sp.flatten({n: total[n][i] for n in sp.names}) for i in range(V.shape[0])]) / N

    def torch_matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``M v`` for a flat tensor ``v`` (dim,)."""
        return self.torch_matmat(v.reshape(1, -1))[0]

    def _batch(self, fixed, params, tangents, X, Y):
        model, loss = self.model, self.loss
        single = next(iter(tangents.values())).shape[0] == 1

        def out(p):
            return functional_call(model, {**fixed, **p}, (X,))

        if self.matrix == "hessian":

            def f(p):
                y = out(p)
                return loss_sum(loss, y, targets(loss, y, Y))

            def product(v):
                return jvp(grad(f), (params,), (v,))[1]
        else:
            y, vjp_fn = vjp(out, params)
            if y.ndim != 2:
                raise SciPruneError(f"the model output must have shape (B, C), got {tuple(y.shape)}")
            targets(loss, y, Y)  # validates Y

            def product(v):
                Jv = jvp(out, (params,), (v,))[1]
                return vjp_fn(out_hessian_product(loss, y, Jv))[0]

        if single:
            r = product({n: t[0] for n, t in tangents.items()})
            return {n: t[None] for n, t in r.items()}
        return vmap(product)(tangents)

    # --- scipy side --------------------------------------------------------------------------
    def _matvec(self, x):
        v = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)))
        return self.torch_matvec(v).detach().to("cpu", torch.float64).numpy()

    def _rmatvec(self, x):
        return self._matvec(x)

    def _adjoint(self):
        return self


def hessian_operator(model: nn.Module, data, *, loss: str, names: Sequence[str] | str | None = None,
                     batch_size: int | None = None) -> CurvatureOperator:
    """The Hessian of the data-set loss on the kept coordinates of ``names`` (LinearOperator)."""
    return CurvatureOperator(model, data, loss=loss, matrix="hessian", names=names, batch_size=batch_size)


def ggn_operator(model: nn.Module, data, *, loss: str, names: Sequence[str] | str | None = None,
                 batch_size: int | None = None) -> CurvatureOperator:
    """The generalised Gauss-Newton matrix ``(1/N) sum_n J_n^T H_n J_n`` (LinearOperator)."""
    return CurvatureOperator(model, data, loss=loss, matrix="ggn", names=names, batch_size=batch_size)


def _product(matrix, model, data, v, loss, names, batch_size):
    op = CurvatureOperator(model, data, loss=loss, matrix=matrix, names=names, batch_size=batch_size)
    if isinstance(v, Mapping):
        extra = sorted(set(v) - set(op.space.names))
        if extra:
            raise SciPruneError(f"v has entries {extra} outside the space {list(op.space.names)}; pass names= to match")
        return op.space.unflatten(op.torch_matvec(op.space.flatten(v)))
    if isinstance(v, torch.Tensor):
        return op.torch_matvec(v)
    raise SciPruneError(f"v must be a dict name -> tensor or a flat tensor of length {op.space.dim}, got {type(v).__name__}")


def hvp(model: nn.Module, data, v, *, loss: str, names: Sequence[str] | str | None = None,
        batch_size: int | None = None):
    """Hessian-vector product ``P H P v`` of the data-set loss.

    ``v``: a dict name -> tensor shaped like the parameter (returns the same, zero at pruned entries)
    or a flat tensor over the space's kept coordinates (returns a flat tensor).
    """
    return _product("hessian", model, data, v, loss, names, batch_size)


def ggnvp(model: nn.Module, data, v, *, loss: str, names: Sequence[str] | str | None = None,
          batch_size: int | None = None):
    """Generalised Gauss-Newton-vector product ``P G P v`` (``v`` as in :func:`hvp`)."""
    return _product("ggn", model, data, v, loss, names, batch_size)
