"""Why a pruned network generalises, measured on every network of a study (case files: ``[diagnostics]``).

For the dense network and every final (fine-tuned) pruned network of a block, on its training split:

- ``hessian_eig``: the top-``hessian_top`` eigenvalues of the Hessian of the training loss (Lanczos,
  :func:`sciprune.diagnostics.hessian_summary`), the sharpness measure of Tartaglione et al. (2020),
  Fig. 4;
- ``psp_norm``: per hidden layer the mean over neurons of E_x[z_i^2] (their Fig. 3,
  :func:`sciprune.diagnostics.psp_norms`);
- ``psp_entropy`` / ``psp_pair_entropy``: per hidden layer the mean first- and second-order
  PSP-entropy in bits (their eqs. 4-5, :func:`sciprune.diagnostics.psp_entropy`), defined for ReLU
  networks only: other activations leave them out (NaN in the results).

:func:`network_diagnostics` returns plain lists (JSON-safe, as a sweep stores them);
:func:`sciprune.study_records.diagnostic_variables` turns them into the results' variables.
"""

from __future__ import annotations

from torch import nn

from .activations import activation_of
from .models import linear_chain

__all__ = ["network_diagnostics", "DIAGNOSTICS"]

#: What :func:`network_diagnostics` may return, and the dimension each is listed over.
DIAGNOSTICS = {"hessian_eig": "eig", "psp_norm": "layer", "psp_entropy": "layer", "psp_pair_entropy": "layer"}


def _relu_only(model: nn.Module) -> bool:
    acts = [activation_of(m).name for m in model if not isinstance(m, nn.Linear)]
    return bool(acts) and all(a == "relu" for a in acts)


def network_diagnostics(model: nn.Module, task, *, hessian_top: int, psp: bool, seed: int = 0) -> dict[str, list[float]]:
    """The diagnostics of ``model`` on ``task``'s training split: ``{name: [values]}`` for the
    names of :data:`DIAGNOSTICS` that are asked for and defined for this network."""
    from .diagnostics import hessian_summary, psp_entropy, psp_norms

    linear_chain(model)  # a plain chain, as every diagnostic here needs
    data = (task.X_train, task.Y_train)
    out: dict[str, list[float]] = {}
    if hessian_top:
        loss = "mse" if task.task == "regression" else "cross_entropy"
        h = hessian_summary(model, data, loss=loss, k=hessian_top, kfac=False, seed=seed)
        out["hessian_eig"] = [float(v) for v in h["eigenvalue"].values]
    if psp:
        if _relu_only(model):
            e = psp_entropy(model, data, order=(1, 2))
            out["psp_norm"] = [float(v) for v in e["mean_psp_sq"].values]
            out["psp_entropy"] = [float(v) for v in e["mean_entropy"].values]
            out["psp_pair_entropy"] = [float(v) for v in e["mean_pair_entropy"].values]
        else:
            out["psp_norm"] = [float(v) for v in psp_norms(model, data)["mean_psp_sq"].values]
    return out
