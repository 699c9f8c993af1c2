"""``TrainConfig.start_step``: a run resumed at optimiser step k from the weights of step k continues
the uninterrupted run (learning-rate schedule, mini-batch order, step count), the retraining that
lottery-ticket rewinding needs. With plain SGD (no optimiser state to lose) the two are bitwise equal."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

import sciprune
from sciprune.ensemble import fit_many
from sciprune.errors import SciPruneError
from sciprune.training import TrainConfig


def _data(n=30):
    g = torch.Generator().manual_seed(0)
    X = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return X, torch.sin(X).sum(1, keepdim=True)


def _model(seed=0):
    return sciprune.MLP(2, [5], 1, "tanh", seed=seed).double()


class _At:
    """Stores the state_dict after optimiser step k and counts the steps taken."""

    def __init__(self, k: int) -> None:
        self.k, self.state, self.steps, self.first = k, None, 0, None

    def after_step(self, s) -> None:
        self.steps += 1
        self.first = s.step if self.first is None else self.first
        if s.step == self.k:
            self.state = copy.deepcopy(s.model.state_dict())


CASES = [("constant", 8, 7), ("cosine", 8, 9), ("step", 8, 12), ("cosine", None, 3), ("step", 7, 4)]


@pytest.mark.parametrize("schedule,batch,k", CASES)
def test_resumed_sgd_equals_the_uninterrupted_run(schedule, batch, k):
    X, Y = _data()
    cfg = TrainConfig(optimizer="sgd", momentum=0.0, lr=0.05, epochs=6, batch_size=batch, lr_schedule=schedule,
                      step_size=2, gamma=0.5, seed=3)
    full, at = _model(), _At(k)
    sciprune.fit(full, (X, Y), cfg, hooks=[at])
    resumed, count = _model(), _At(-1)
    resumed.load_state_dict(at.state)
    sciprune.fit(resumed, (X, Y), replace(cfg, start_step=k), hooks=[count])
    assert count.first == k + 1 and count.steps == at.steps - k  # the steps left, numbered from k + 1
    for a, b in zip(full.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    many = _model()
    many.load_state_dict(at.state)
    fit_many([many, copy.deepcopy(many)], (X, Y), replace(cfg, start_step=k))  # the ensemble engine alike
    for a, b in zip(full.parameters(), many.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)


def test_bad_start_steps_are_one_line():
    X, Y = _data()
    with pytest.raises(SciPruneError, match="not before the end of the run"):
        sciprune.fit(_model(), (X, Y), TrainConfig(epochs=2, batch_size=10, start_step=6))
    with pytest.raises(SciPruneError, match="plateau"):
        TrainConfig(lr_schedule="plateau", start_step=2)
    with pytest.raises(SciPruneError, match="L-BFGS"):
        TrainConfig(optimizer="lbfgs", start_step=2)
    for bad in (-1, 1.5, True):
        with pytest.raises(SciPruneError, match="start_step"):
            TrainConfig(start_step=bad)
