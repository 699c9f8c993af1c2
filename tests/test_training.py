"""Training (fit) and model building: determinism, convergence, early stopping, schedules, validation."""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import sciprune
import sciprune.metrics
from sciprune.errors import SciPruneError
from sciprune.models import ACTIVATIONS, Sine, linear_chain
import sciprune.training
from sciprune.training import TrainConfig, evaluate_loss, fit




def _regression(n=128, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=dtype) * 2 - 1
    Y = (torch.sin(math.pi * X[:, :1]) * torch.exp(-X[:, 1:]))
    return X, Y


def _classification(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    W = torch.tensor([[2.0, -1.0, 0.5, 0.0], [-1.0, 2.0, 0.0, 1.0], [0.0, 0.0, -2.0, 1.5]])
    return X, (X @ W.T).argmax(dim=1)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --------------------------------------------------------------------------- fit


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "lbfgs"])
def test_deterministic_bitwise(optimizer):
    X, Y = _regression()
    cfg = TrainConfig(optimizer=optimizer, lr=1e-2 if optimizer != "lbfgs" else 0.5, epochs=8,
                      batch_size=None if optimizer == "lbfgs" else 32, weight_decay=1e-4, seed=7)
    runs = []
    for _ in range(2):
        model = sciprune.MLP(2, [16, 16], 1, "tanh", seed=1)
        hist = fit(model, (X, Y), cfg)
        runs.append((_weights(model), hist.train_loss))
    (w1, l1), (w2, l2) = runs
    assert l1 == l2
    for n in w1:
        assert torch.equal(w1[n], w2[n]), n


def test_shuffling_seed_changes_the_run():
    X, Y = _regression()
    out = []
    for seed in (0, 1):
        model = sciprune.MLP(2, [16], 1, seed=1)
        fit(model, (X, Y), TrainConfig(lr=1e-2, epochs=3, batch_size=16, seed=seed))
        out.append(model.linear0.weight.detach().clone())
    assert not torch.equal(*out)


@pytest.mark.parametrize("optimizer, lr, epochs", [("adam", 1e-2, 300), ("sgd", 0.1, 300), ("lbfgs", 1.0, 15)])
def test_loss_decreases_on_regression(optimizer, lr, epochs):
    X, Y = _regression()
    model = sciprune.MLP(2, [20, 20], 1, "tanh", seed=0)
    before = evaluate_loss(model, X, Y, "mse")
    hist = fit(model, (X, Y), TrainConfig(optimizer=optimizer, lr=lr, epochs=epochs))
    after = evaluate_loss(model, X, Y, "mse")
    assert after < 0.05 * before, (before, after)
    assert hist.train_loss[-1] < hist.train_loss[0]
    assert len(hist.epoch) == epochs and hist.epoch[-1] == epochs
    assert all(math.isnan(v) for v in hist.val_loss)
    assert not model.training  # fit leaves the model in eval mode


def test_float64_training():
    X, Y = _regression(dtype=torch.float64)
    model = sciprune.MLP(2, [12], 1, seed=0).double()
    fit(model, (X, Y), TrainConfig(lr=1e-2, epochs=50))
    assert all(p.dtype == torch.float64 for p in model.parameters())


def test_classification_cross_entropy_on_integer_labels():
    X, y = _classification()
    assert y.dtype == torch.int64
    model = sciprune.MLP(4, [16], 3, "relu", seed=0)
    cfg = TrainConfig(lr=1e-2, epochs=150, batch_size=60)
    hist = fit(model, (X, y), cfg)
    with torch.no_grad():
        acc = sciprune.metrics.accuracy(model(X), y)
    assert acc > 0.9
    assert hist.train_loss[-1] < 0.5 * hist.train_loss[0]
    # the default loss for integer labels is cross-entropy
    explicit = sciprune.MLP(4, [16], 3, "relu", seed=0)
    hist2 = fit(explicit, (X, y), cfg, loss="cross_entropy")
    assert hist2.train_loss == hist.train_loss
    # numpy labels work too
    model3 = sciprune.MLP(4, [16], 3, "relu", seed=0)
    assert fit(model3, (X.numpy(), y.numpy()), cfg).train_loss == hist.train_loss


def test_early_stopping_restores_best_weights():
    X, Y = _regression(seed=0)
    Xv, Yv = _regression(seed=1)
    Yv = 0.4 * Yv  # the model passes near 0.4 f on its way to f: val loss falls, then rises
    model = sciprune.MLP(2, [16, 16], 1, "tanh", seed=0)
    cfg = TrainConfig(lr=5e-3, epochs=2000, patience=10)
    hist = fit(model, (X, Y), cfg, val=(Xv, Yv))
    assert hist.stopped_early and hist.epoch[-1] < 2000
    best = min(hist.val_loss)
    i = hist.val_loss.index(best)
    assert hist.best_epoch == hist.epoch[i] > 1  # a real minimum, not the first evaluation
    assert hist.epoch[-1] == hist.best_epoch + 10
    assert hist.val_loss[-1] > best
    assert evaluate_loss(model, Xv, Yv, "mse") == best  # bitwise: the best weights came back


def test_no_early_stopping_without_patience():
    X, Y = _regression(seed=0)
    Xv, Yv = _regression(seed=1)
    model = sciprune.MLP(2, [8], 1, seed=0)
    hist = fit(model, (X, Y), TrainConfig(lr=1e-2, epochs=20), val=(Xv, 0.4 * Yv))
    assert not hist.stopped_early and hist.epoch[-1] == 20
    assert evaluate_loss(model, Xv, 0.4 * Yv, "mse") == hist.val_loss[-1]


def test_eval_every():
    X, Y = _regression()
    hist = fit(sciprune.MLP(2, [8], 1, seed=0), (X, Y), TrainConfig(epochs=10, eval_every=4), val=(X, Y))
    assert hist.epoch == [4, 8, 10]


def test_progress_callback():
    X, Y = _regression()
    calls = []
    fit(sciprune.MLP(2, [8], 1, seed=0), (X, Y), TrainConfig(epochs=3), progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [1, 2, 3] and all(c[1] == 3 for c in calls)


@contextlib.contextmanager
def _recorded_lrs():
    """The learning rate of every optimiser step taken inside the block (a global step pre-hook)."""
    lrs: list[float] = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    try:
        yield lrs
    finally:
        handle.remove()


def _per_epoch(lrs: list[float], steps: int) -> list[float]:
    """One rate per epoch from ``steps`` recorded steps per epoch (all steps of an epoch share it)."""
    epochs = [lrs[i : i + steps] for i in range(0, len(lrs), steps)]
    assert all(len(set(e)) == 1 for e in epochs), "the rate changed inside an epoch"
    return [e[0] for e in epochs]


LR, EPOCHS, STEP_SIZE, GAMMA = 1e-2, 12, 5, 0.3
CLOSED_FORM = {  # the rate used in epoch e = 1..EPOCHS (TrainConfig's docstring)
    "constant": lambda e: LR,
    "cosine": lambda e: LR * (1 + math.cos(math.pi * (e - 1) / EPOCHS)) / 2,   # to 0 over the run
    "step": lambda e: LR * GAMMA ** ((e - 1) // STEP_SIZE),                    # x gamma every step_size epochs
}


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("schedule", sorted(CLOSED_FORM))
def test_schedule_rates_follow_the_closed_form(schedule, optimizer):
    X, Y = _regression()
    cfg = TrainConfig(optimizer=optimizer, lr=LR, epochs=EPOCHS, lr_schedule=schedule, step_size=STEP_SIZE,
                      gamma=GAMMA, batch_size=64)
    with _recorded_lrs() as lrs:
        fit(sciprune.MLP(2, [8], 1, seed=0), (X, Y), cfg)
    got = _per_epoch(lrs, steps=2)                  # 128 points in batches of 64
    expected = [CLOSED_FORM[schedule](e) for e in range(1, EPOCHS + 1)]
    assert got == pytest.approx(expected, rel=1e-12, abs=0)


def _scripted_validation(monkeypatch, values: list[float]) -> None:
    """Make fit see ``values`` as its validation losses, one per epoch."""
    it = iter(values)
    monkeypatch.setattr(sciprune.training, "evaluate_loss", lambda *a, **k: next(it))


def _plateau_run(monkeypatch, values: list[float], step_size: int) -> list[float]:
    _scripted_validation(monkeypatch, values)
    X, Y = _regression(32)
    cfg = TrainConfig(lr=LR, epochs=len(values), lr_schedule="plateau", step_size=step_size, gamma=GAMMA)
    with _recorded_lrs() as lrs:
        fit(sciprune.MLP(2, [4], 1, seed=0), (X, Y), cfg, val=_regression(8, seed=1))
    return _per_epoch(lrs, steps=1)


def _plateau_reference(values: list[float], step_size: int) -> list[float]:
    """TrainConfig: x gamma after ``step_size`` epochs without validation improvement (the count
    restarts at each improvement and after each reduction, as early stopping's ``patience`` counts)."""
    lr, best, bad, out = LR, math.inf, 0, []
    for v in values:
        out.append(lr)                              # the rate of this epoch, used before its evaluation
        best, bad = (v, 0) if v < best else (best, bad + 1)
        if bad == step_size:
            lr, bad = lr * GAMMA, 0
    return out


def test_plateau_keeps_the_rate_while_validation_improves(monkeypatch):
    values = [1.0 / e for e in range(1, 11)]
    assert _plateau_run(monkeypatch, values, step_size=1) == [LR] * 10


@pytest.mark.parametrize("step_size", [1, 2, 3])
def test_plateau_rates_follow_the_documented_rule(monkeypatch, step_size):
    values = [1.0, 0.9, 0.9, 0.95, 0.9, 0.8, 0.85, 0.85, 0.85, 0.85, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7]
    expected = _plateau_reference(values, step_size)
    assert len(set(expected)) >= 3                  # the script reduces the rate at least twice
    assert _plateau_run(monkeypatch, values, step_size) == pytest.approx(expected, rel=1e-12, abs=0)


def test_taskdata_input():
    from sciprune.data._types import TaskData

    X, Y = _regression(96)
    task = TaskData("regression", X[:64], Y[:64], X[64:80], Y[64:80], X[80:], Y[80:])
    model = sciprune.MLP(2, [8], 1, seed=0)
    hist = fit(model, task, TrainConfig(epochs=5, patience=3))
    assert all(math.isfinite(v) for v in hist.val_loss)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"optimizer": "rmsprop"}, {"lr_schedule": "exponential"}, {"lr": 0.0}, {"lr": -1e-3},
        {"lr": float("nan")}, {"lr": float("inf")}, {"epochs": -1}, {"batch_size": 0},
        {"weight_decay": -0.1}, {"weight_decay": float("nan")}, {"patience": 0}, {"eval_every": 0},
        {"momentum": -0.5}, {"step_size": 0}, {"gamma": 0.0}, {"gamma": 1.5}, {"gamma": float("nan")},
    ],
)
def test_bad_config_raises(kwargs):
    with pytest.raises(SciPruneError, match=next(iter(kwargs))):
        TrainConfig(**kwargs)


def test_config_is_frozen_and_serialisable():
    cfg = TrainConfig(lr=1e-2)
    with pytest.raises(Exception):
        cfg.lr = 1.0  # type: ignore[misc]
    assert TrainConfig(**cfg.to_dict()) == cfg


def test_bad_fit_inputs_raise():
    X, Y = _regression()
    model = sciprune.MLP(2, [8], 1, seed=0)
    with pytest.raises(SciPruneError, match="validation"):
        fit(model, (X, Y), TrainConfig(epochs=2, patience=2))
    with pytest.raises(SciPruneError, match="validation"):
        fit(model, (X, Y), TrainConfig(epochs=2, lr_schedule="plateau"))
    with pytest.raises(SciPruneError, match="rows"):
        fit(model, (X, Y[:-1]), TrainConfig(epochs=1))
    with pytest.raises(SciPruneError, match="loss"):
        fit(model, (X, Y), TrainConfig(epochs=1), loss="hinge")
    with pytest.raises(SciPruneError, match="NaN"):
        fit(model, (X, torch.full_like(Y, float("nan"))), TrainConfig(epochs=1))
    with pytest.raises(SciPruneError, match="TaskData"):
        fit(model, [X, Y], TrainConfig(epochs=1))
    with pytest.raises(SciPruneError, match="diverged"):
        fit(model, (X, Y * 1e30), TrainConfig(optimizer="sgd", lr=1e10, momentum=0.0, epochs=5))


# --------------------------------------------------------------------------- models


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_mlp_sizes_names_and_activations(activation):
    model = sciprune.MLP(2, [40] * 6, 1, activation, seed=0)
    assert model.sizes == [2] + [40] * 6 + [1]
    names = [n for n, _ in model.named_children()]
    assert names == [x for i in range(7) for x in (f"linear{i}", f"act{i}")][:-1]
    for i in range(6):
        assert type(getattr(model, f"act{i}")) is ACTIVATIONS[activation]
    assert isinstance(model[-1], nn.Linear) and model[-1].out_features == 1
    assert sum(p.numel() for p in model.parameters()) == 2 * 40 + 40 + 5 * (40 * 40 + 40) + 40 + 1
    x = torch.randn(5, 2)
    assert model(x).shape == (5, 1)


def test_mlp_activation_values():
    x = torch.linspace(-2, 2, 9)[:, None]
    for name, ref in [("tanh", torch.tanh), ("relu", torch.relu), ("gelu", nn.functional.gelu), ("sin", torch.sin)]:
        m = sciprune.MLP(1, [1], 1, name, seed=0)
        with torch.no_grad():
            m.linear0.weight.fill_(1.0); m.linear0.bias.zero_(); m.linear1.weight.fill_(1.0); m.linear1.bias.zero_()
            assert torch.equal(m(x), ref(x)), name
    assert torch.allclose(Sine(3.0)(x), torch.sin(3.0 * x))


def test_mlp_without_hidden_layers():
    model = sciprune.MLP(3, [], 2, seed=0)
    assert model.sizes == [3, 2] and len(linear_chain(model)) == 1


@pytest.mark.parametrize("args", [(2, [4], 1, "swish"), (0, [4], 1), (2, [0], 1), (2, [4], 0)])
def test_mlp_rejects_bad_arguments(args):
    with pytest.raises(SciPruneError):
        sciprune.MLP(*args)


def test_lenet_300_100():
    model = sciprune.lenet_300_100(seed=0)
    assert model.sizes == [784, 300, 100, 10]
    assert [type(m) for m in model] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert sum(p.numel() for p in model.parameters()) == 266_610
    assert model(torch.randn(7, 784)).shape == (7, 10)
    assert sciprune.lenet_300_100(64, 10, seed=0).sizes == [64, 300, 100, 10]


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
@pytest.mark.parametrize("widths", [[5], [7, 3, 4], []])
def test_describe_build_round_trip(activation, widths):
    model = sciprune.MLP(3, widths, 2, activation, seed=4)
    spec = model_spec = sciprune.describe(model)
    assert spec == {"kind": "mlp", "sizes": [3, *widths, 2], "activation": activation if widths else spec["activation"]}
    rebuilt = sciprune.build_model(model_spec, seed=4)
    assert sciprune.describe(rebuilt) == spec
    assert [n for n, _ in rebuilt.named_parameters()] == [n for n, _ in model.named_parameters()]
    if widths:  # same seed, same architecture: the same weights
        for (_, a), (_, b) in zip(model.named_parameters(), rebuilt.named_parameters()):
            assert torch.equal(a, b)


def test_describe_hand_built_chain():
    model = nn.Sequential(nn.Linear(2, 5), nn.Tanh(), nn.Linear(5, 3), nn.Tanh(), nn.Linear(5 - 2, 1))
    assert sciprune.describe(model) == {"kind": "mlp", "sizes": [2, 5, 3, 1], "activation": "tanh"}


class _NotAChain(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x) + x


@pytest.mark.parametrize(
    "model",
    [
        _NotAChain(),
        nn.Sequential(nn.Tanh()),
        nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1)),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh()),
        nn.Sequential(nn.Linear(2, 3), nn.Sigmoid(), nn.Linear(3, 1)),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1)),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(4, 1)),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Tanh(), nn.Linear(3, 1)),
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Dropout(0.1), nn.Linear(3, 1)),
    ],
    ids=["module", "no-linear", "linear-linear", "ends-with-act", "sigmoid", "mixed", "size-mismatch", "double-act", "dropout"],
)
def test_describe_rejects_non_chains(model):
    with pytest.raises(SciPruneError):
        sciprune.describe(model)


@pytest.mark.parametrize("spec", [{"kind": "cnn", "sizes": [2, 1]}, {"kind": "mlp", "sizes": [2]}, {"sizes": [2, 1]}])
def test_build_model_rejects_bad_specs(spec):
    with pytest.raises(SciPruneError):
        sciprune.build_model(spec)


def test_seeded_init_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = sciprune.MLP(3, [10, 10], 2, seed=5)
    b = sciprune.MLP(3, [10, 10], 2, seed=5)
    c = sciprune.MLP(3, [10, 10], 2, seed=6)
    d = sciprune.lenet_300_100(seed=5)
    assert torch.equal(torch.get_rng_state(), state)
    for (_, pa), (_, pb), (_, pc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    # a seed gives the same weights whatever the global state
    torch.manual_seed(999)
    e = sciprune.MLP(3, [10, 10], 2, seed=5)
    assert torch.equal(e.linear1.weight, a.linear1.weight)
    assert d.linear0.weight.shape == (300, 784)


def test_unseeded_models_differ_and_follow_the_global_rng():
    torch.manual_seed(0)
    a = sciprune.MLP(3, [10], 2)
    b = sciprune.MLP(3, [10], 2)
    assert not torch.equal(a.linear0.weight, b.linear0.weight)
    torch.manual_seed(0)
    c = sciprune.MLP(3, [10], 2)
    assert torch.equal(a.linear0.weight, c.linear0.weight)


@pytest.mark.parametrize("act", [sciprune.models.Sine(30.0), torch.nn.GELU(approximate="tanh")])
def test_describe_rejects_activations_it_cannot_rebuild(act):
    chain = torch.nn.Sequential(torch.nn.Linear(2, 4), act, torch.nn.Linear(4, 1))
    with pytest.raises(SciPruneError, match="unsupported module"):
        sciprune.describe(chain)
