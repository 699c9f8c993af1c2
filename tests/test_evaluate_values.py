"""``sciprune.pipeline.evaluate``: the headline metrics of a network with known outputs, by hand.

Regression: a one-layer network whose weights are set, from the task's recorded scalings, so that in
physical units it predicts ``u_hat(x, t) = alpha x + beta t + gamma``; the data file holds a known field
``u(x, t)``. Every metric is recomputed in numpy from the field written to the file, the noise law and
the split (not from the task's tensors). Classification: a linear classifier with fixed weights on a
tiny image set with a separate test split; cross-entropy and accuracy by hand.
"""

from __future__ import annotations

from collections import OrderedDict

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from sciprune.config import DataSpec
from sciprune.data.classification import write_classification_h5
from sciprune.data.coords import split_indices
from sciprune.data.noise import NoiseModel
from sciprune.pipeline import evaluate
from sciprune.tasks import build_task

NT, NX = 6, 10
ALPHA, BETA, GAMMA = 0.25, -0.0001, 1.0         # the network's u_hat(x, t) in physical units
SEED = 3
NOISES = [NoiseModel("none", 0.0), NoiseModel("gaussian", 0.05)]
F64 = torch.float64


def _field() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x (Nx,), t (Nt,), u (Nt, Nx): float32 as a PDEBench file stores them."""
    x = ((np.arange(NX) + 0.5) / NX).astype(np.float32)
    t = np.linspace(0.0, 500.0, NT).astype(np.float32)
    u = 1.0 + 0.2 * x[None, :] + 0.1 * np.sin(2 * np.pi * x)[None, :] * np.exp(-t / 300.0)[:, None]
    return x, t, u.astype(np.float32)


@pytest.fixture(scope="module")
def pdebench_file(tmp_path_factory):
    """A one-sample file in the per-sample group layout of PDEBench's diffusion-sorption data."""
    path = tmp_path_factory.mktemp("evaluate") / "tiny.h5"
    x, t, u = _field()
    with h5py.File(path, "w") as h5:
        g = h5.create_group("0000")
        g.create_dataset("data", data=u[..., None])
        g.create_dataset("grid/x", data=x)
        g.create_dataset("grid/t", data=t)
    return path


def _linear_in_physical_units(task) -> nn.Sequential:
    """A Linear layer mapping scaled (x, t) to scaled u so that physically u_hat = ALPHA x + BETA t + GAMMA.

    With network = (physical - shift) / scale on both sides: w_j = a_j k_j / k_u and
    b = (GAMMA - s_u + sum_j a_j s_j) / k_u.
    """
    s_in, k_in = task.input_scaling.shift, task.input_scaling.scale
    s_u, k_u = float(task.output_scaling.shift[0]), float(task.output_scaling.scale[0])
    a = np.array([ALPHA, BETA])
    model = nn.Sequential(OrderedDict(linear0=nn.Linear(2, 1))).to(F64)
    with torch.no_grad():
        model.linear0.weight.copy_(torch.as_tensor(a * k_in / k_u)[None, :])
        model.linear0.bias.fill_((GAMMA - s_u + float(np.sum(a * s_in))) / k_u)
    return model


@pytest.mark.parametrize("noise", NOISES, ids=lambda n: n.kind)
@pytest.mark.parametrize("split", ["random", "time"])
def test_regression_metrics_in_physical_units(pdebench_file, split, noise):
    spec = DataSpec(kind="pdebench", file=str(pdebench_file), split=split, test_fraction=0.3, val_fraction=0.2)
    loaded = build_task(spec, noise_kind=noise.kind, noise_level=noise.level, seed=SEED, dtype=F64)
    got = evaluate(_linear_in_physical_units(loaded.task), loaded)

    x, t, u = _field()
    X, T = np.meshgrid(x.astype(np.float64), t.astype(np.float64))     # (Nt, Nx)
    clean = u.astype(np.float64)
    noisy = noise.apply(clean.reshape(-1, 1), seed=SEED).reshape(clean.shape)
    assert np.array_equal(loaded.noisy_field, noisy) and np.array_equal(noisy, clean) == (noise.level == 0)
    pred = ALPHA * X + BETA * T + GAMMA
    idx, _ = split_indices(t, NX, split=split, test_fraction=0.3, val_fraction=0.2, seed=SEED)
    te, tr = idx["test"], idx["train"]
    p, c, n = pred.ravel(), clean.ravel(), noisy.ravel()
    expected = {
        "test_mse": np.mean((p[te] - n[te]) ** 2),
        "test_mse_clean": np.mean((p[te] - c[te]) ** 2),
        "test_rel_l2_clean": np.sqrt(np.sum((p[te] - c[te]) ** 2) / np.sum(c[te] ** 2)),
        # PDEBench's nRMSE on the whole clean field: per time, RMS over x of the error over RMS of u
        "field_nrmse": np.mean(np.sqrt(np.mean((pred - clean) ** 2, axis=1) / np.mean(clean ** 2, axis=1))),
        "train_mse": np.mean((p[tr] - n[tr]) ** 2),       # the training targets are the noisy ones
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert value > 1e-4, key                          # a prediction that is visibly off
        assert got[key] == pytest.approx(value, rel=1e-10), key
    # noisy and clean targets differ by the noise: here as large as the model's error
    same = got["test_mse"] == pytest.approx(got["test_mse_clean"], rel=0.05)
    assert same == (noise.level == 0)


def test_classification_metrics_by_hand(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 2, 2), dtype=np.uint8)
    labels = rng.integers(0, 3, size=12)
    t_images = rng.integers(0, 256, size=(9, 2, 2), dtype=np.uint8)
    t_labels = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    path = write_classification_h5(tmp_path / "tiny.h5", images, labels, test_images=t_images, test_labels=t_labels)
    loaded = build_task(DataSpec(kind="classification", source=str(path), val_fraction=0.0), seed=1, dtype=F64)

    W = np.array([[2.0, -1.0, 0.5, 0.0], [-1.0, 2.0, 0.0, 1.0], [0.0, 0.5, -2.0, 1.5]])
    b = np.array([0.1, -0.2, 0.3])
    model = nn.Sequential(OrderedDict(linear0=nn.Linear(4, 3))).to(F64)
    with torch.no_grad():
        model.linear0.weight.copy_(torch.as_tensor(W))
        model.linear0.bias.copy_(torch.as_tensor(b))
    got = evaluate(model, loaded)

    def ce_acc(im, lab):
        z = im.reshape(len(im), -1).astype(np.float64) / 255.0 @ W.T + b      # uint8 pixels / 255
        m = z.max(axis=1, keepdims=True)
        logp = z - m - np.log(np.exp(z - m).sum(axis=1, keepdims=True))
        return -np.mean(logp[np.arange(len(lab)), lab]), np.mean(z.argmax(axis=1) == lab)

    test_loss, test_acc = ce_acc(t_images, t_labels)
    train_loss, _ = ce_acc(images, labels)                 # val_fraction 0: every training image
    assert 0 < test_acc < 1
    assert got == pytest.approx({"test_loss": test_loss, "test_accuracy": test_acc, "train_loss": train_loss}, rel=1e-12)
