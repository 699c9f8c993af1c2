"""Curvature of the training loss: Hessian / GGN products, eigenpairs, traces, diagonals and K-FAC.

Everything is built on ``torch.func`` and keyed by ``model.named_parameters()`` names. Data are
passed as elsewhere in sciprune (``(X, Y)``, a TaskData or a re-iterable of batches), the loss by name
(``"mse"``: mean over all entries, ``"cross_entropy"``: mean over samples), and the data-set loss is
the mean over all samples whatever ``batch_size``. Masked-out weights are outside every operator's
space (the projected matrix ``P M P`` on the kept coordinates).

* :class:`ParamSpace`: the coordinates an operator acts on; flat <-> name-keyed vectors.
* :func:`hvp`, :func:`ggnvp`, :func:`hessian_operator`, :func:`ggn_operator`: exact products.
* :func:`top_eigenpairs` (Lanczos), :func:`power_iteration_eigs` (the PyHessian peer), :class:`EigResult`.
* :func:`hutchinson_trace`, :func:`hutchinson_diagonal`: Rademacher estimators.
* :func:`ggn_diagonal`: exact GGN diagonal of a Linear/activation chain (OBD's curvature).
* :func:`kfac_factors`, :func:`kfac_spectral_radius`: Kronecker factors and their top eigenpair.
"""

from ._chain import LinearChain
from ._eigs import EigResult, power_iteration_eigs, top_eigenpairs
from ._ggn_diag import ggn_diagonal
from ._hutchinson import hutchinson_diagonal, hutchinson_trace
from ._kfac import KFACFactor, kfac_factors, kfac_spectral_radius
from ._loss import LOSSES
from ._operators import CurvatureOperator, ggn_operator, ggnvp, hessian_operator, hvp
from ._space import ParamSpace

__all__ = [
    "LOSSES",
    "CurvatureOperator",
    "EigResult",
    "KFACFactor",
    "LinearChain",
    "ParamSpace",
    "ggn_diagonal",
    "ggn_operator",
    "ggnvp",
    "hessian_operator",
    "hutchinson_diagonal",
    "hutchinson_trace",
    "hvp",
    "kfac_factors",
    "kfac_spectral_radius",
    "power_iteration_eigs",
    "top_eigenpairs",
]
