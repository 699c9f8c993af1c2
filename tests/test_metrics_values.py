"""Reference values of the error metrics: hand-computed arrays and PDEBench's nRMSE.

``nrmse_field`` follows PDEBench's ``metric_func`` (``pdebench/models/metrics.py``, Takamoto et al.
2022): for data laid out (batch, nx, nt, channels) it takes, per batch, channel and time,
``err = sqrt(mean_x (pred - target)^2)`` and ``nrm = sqrt(mean_x target^2)``, averages ``err / nrm``
over the batch, then over channels and times. :func:`_pdebench_nrmse` restates that definition in
numpy on the PDEBench layout; one trajectory of one channel is sciprune's (Nt, Nx) case.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sciprune.metrics import accuracy, cross_entropy, mse, nrmse_field, rel_l2


def _pdebench_nrmse(pred: np.ndarray, target: np.ndarray) -> float:
    """PDEBench's nRMSE (``metric_func``, second output, ``if_mean=True``) for (batch, nx, nt, nc) arrays."""
    p = np.moveaxis(pred, 3, 1).astype(np.float64)          # (nb, nc, nx, nt)
    y = np.moveaxis(target, 3, 1).astype(np.float64)
    err = np.sqrt(np.mean((p - y) ** 2, axis=2))            # (nb, nc, nt)
    nrm = np.sqrt(np.mean(y ** 2, axis=2))
    return float(np.mean(np.mean(err / nrm, axis=0)))        # over the batch, then channels and times


def test_nrmse_field_by_hand():
    """Nt = 2 times, Nx = 3 points; every number below is worked out on paper."""
    y = np.array([[1.0, 2.0, 2.0],     # RMS_x = sqrt(9/3) = sqrt(3)
                  [3.0, 0.0, 4.0]])    # RMS_x = sqrt(25/3)
    e = np.array([[1.0, -1.0, 1.0],    # RMS_x = 1
                  [0.0, 6.0, 0.0]])    # RMS_x = sqrt(12)
    expected = (1 / math.sqrt(3) + math.sqrt(12) / math.sqrt(25 / 3)) / 2   # = (1/sqrt(3) + 6/5) / 2
    assert nrmse_field(y + e, y) == pytest.approx(expected, rel=1e-14)
    # per-time normalisation, not the global relative L2 error (sqrt(39 / 34) here)
    assert math.sqrt(39 / 34) == pytest.approx(rel_l2(torch.tensor(y + e), torch.tensor(y)), rel=1e-14)
    assert abs(nrmse_field(y + e, y) - math.sqrt(39 / 34)) > 0.01
    # rows are times: the transposed problem averages over x instead and differs
    assert abs(nrmse_field((y + e).T, y.T) - expected) > 0.01


@pytest.mark.parametrize("shape", [(1, 1), (5, 7), (16, 3)])
def test_nrmse_field_equals_pdebench_metric(shape):
    rng = np.random.default_rng(sum(shape))
    y = rng.standard_normal(shape) + 2.0
    p = y + 0.3 * rng.standard_normal(shape)
    ref = _pdebench_nrmse(p.T[None, :, :, None], y.T[None, :, :, None])   # (1, Nx, Nt, 1)
    assert nrmse_field(p, y) == pytest.approx(ref, rel=1e-13)
    assert nrmse_field(p.astype(np.float32), y.astype(np.float32)) == pytest.approx(
        _pdebench_nrmse(p.astype(np.float32).T[None, :, :, None], y.astype(np.float32).T[None, :, :, None]), rel=1e-12)


def test_nrmse_field_of_a_uniform_relative_error_is_that_error():
    y = np.outer(np.linspace(1, 2, 4), np.linspace(-1, 3, 6))
    assert nrmse_field(1.05 * y, y) == pytest.approx(0.05, rel=1e-12)
    assert nrmse_field(y, y) == 0.0


def test_nrmse_field_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="nrmse_field"):
        nrmse_field(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="nrmse_field"):
        nrmse_field(np.zeros(6), np.zeros(6))


def test_mse_rel_l2_cross_entropy_accuracy_by_hand():
    p, y = torch.tensor([[1.0, 2.0], [3.0, 5.0]]), torch.tensor([[1.0, 0.0], [3.0, 4.0]])
    assert mse(p, y) == pytest.approx((0 + 4 + 0 + 1) / 4)
    assert rel_l2(p, y) == pytest.approx(math.sqrt(5 / 26))
    logits = torch.tensor([[0.0, math.log(3.0)], [2.0, 0.0], [1.0, 1.5]], dtype=torch.float64)
    labels = torch.tensor([1, 1, 1])
    # -log softmax: log(4/3), log(1 + e^2), log(1 + e^-0.5)
    expected = (math.log(4 / 3) + math.log(1 + math.e ** 2) + math.log(1 + math.exp(-0.5))) / 3
    assert cross_entropy(logits, labels) == pytest.approx(expected, rel=1e-14)
    assert accuracy(logits, labels) == pytest.approx(2 / 3)
