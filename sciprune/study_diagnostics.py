"""Why a pruned network generalises, measured on every network of a study (case files: ``[diagnostics]``).

For the dense network and every final (fine-tuned) pruned network of a block, on its training split:

- ``hessian_eig``: the top-``hessian_top`` eigenvalues of the Hessian of the training loss (Lanczos,
  :func:`sciprune.diagnostics.hessian_summary`), the sharpness measure of Tartaglione et al. (2020),
  Fig. 4;
- ``psp_norm``: per hidden layer the mean over neurons of E_x[z_i^2] (their Fig. 3,
  :func:`sciprune.diagnostics.psp_norms`);
- ``psp_entropy`` / ``psp_pair_entropy``: per hidden layer the mean first- and second-order
  PSP-entropy in bits (their eqs. 4-5, :func:`sciprune.diagnostics.psp_entropy`), defined for ReLU
  networks only: other activations leave them out (NaN in the results);
- ``kfac_radius``: per Linear layer (in order) lambda_max(A_l) lambda_max(G_l) of its K-FAC factors with
  the exact Fisher (:func:`sciprune.curvature.kfac_factors`, Martens & Grosse 2015), the largest eigenvalue
  of the layer's block kron(G_l, A_l); the network's K-FAC spectral radius (Ebrahimi & Klabjan's
  flatness measure) is the largest over layers (:func:`sciprune.curvature.kfac_spectral_radius`);
- ``inference_us``: the forward pass's wall-clock time per row in microseconds, float32 on the model's
  device, on the test split's inputs: one row per call and the whole split in one call
  (:func:`sciprune.inference_time.forward_time_us`; :data:`LABELS` ``batch``), of the network as it is
  exported: :func:`sciprune.compact` of it (whole removed neurons dropped, the same outputs; a network
  with weight masks only keeps its size and its time).

:func:`network_diagnostics` returns plain lists (JSON-safe, as a sweep stores them);
:func:`sciprune.study_records.diagnostic_variables` turns them into the results' variables.
"""

from __future__ import annotations

from torch import nn

from .activations import activation_of
from .models import linear_chain

__all__ = ["network_diagnostics", "kfac_radii", "DIAGNOSTICS", "LABELS"]

#: What :func:`network_diagnostics` may return, and the dimension each is listed over.
DIAGNOSTICS = {"hessian_eig": "eig", "psp_norm": "layer", "psp_entropy": "layer", "psp_pair_entropy": "layer",
               "kfac_radius": "linear", "inference_us": "batch"}
#: The labels of a dimension that is not numbered from 1: ``batch`` "one" (one row per call) and "all"
#: (the whole test split in one call).
LABELS = {"batch": ["one", "all"]}


def _relu_only(model: nn.Module) -> bool:
    acts = [activation_of(m).name for m in model if not isinstance(m, nn.Linear)]
    return bool(acts) and all(a == "relu" for a in acts)


def kfac_radii(model: nn.Module, data, *, loss: str) -> list[float]:
    """lambda_max(A_l) lambda_max(G_l) for every Linear layer l of ``model`` in order, from its exact-Fisher
    K-FAC factors on ``data`` (the eigen-solve of :func:`sciprune.curvature.kfac_spectral_radius`)."""
    from .curvature import kfac_factors, kfac_spectral_radius

    factors = kfac_factors(model, data, loss=loss, fisher="exact")
    return [float(kfac_spectral_radius({name: f})[0]) for name, f in factors.items()]


def network_diagnostics(model: nn.Module, task, *, hessian_top: int, psp: bool, kfac: bool = False,
                        inference: bool = False, seed: int = 0) -> dict[str, list[float]]:
    """The diagnostics of ``model`` on ``task`` (its training split; ``inference``: its test split's
    inputs): ``{name: [values]}`` for the names of :data:`DIAGNOSTICS` that are asked for and defined
    for this network."""
    from .diagnostics import hessian_summary, psp_entropy, psp_norms

    linear_chain(model)  # a plain chain, as every diagnostic here needs
    data = (task.X_train, task.Y_train)
    loss = "mse" if task.task == "regression" else "cross_entropy"
    out: dict[str, list[float]] = {}
    if hessian_top:
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
    if kfac:
        out["kfac_radius"] = kfac_radii(model, data, loss=loss)
    if inference:
        from .inference_time import forward_time_us

        from .compaction import compact

        net = compact(model)  # as exported: whole dead neurons removed (same outputs); masks alone save nothing
        out["inference_us"] = [forward_time_us(net, task.X_test, batch=b) for b in (1, None)]
    return out
