"""``TrainConfig.lr_start_epoch``: a run resumed at epoch s uses, epoch by epoch, the learning rates an
uninterrupted run uses from epoch s on (the schedule lottery-ticket rewinding resumes)."""

from __future__ import annotations

import pytest
import torch

import sciprune
from sciprune.errors import SciPruneError
from sciprune.training import TrainConfig


class _Rates:
    """Records the learning rate of each epoch's first optimiser step."""

    def __init__(self) -> None:
        self.rates: list[float] = []

    def after_step(self, state) -> None:
        if len(self.rates) < state.epoch:
            opt = state.optimizer
            self.rates.append(opt.param_groups[0]["lr"])


def _rates(config: TrainConfig) -> list[float]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(32, 2, generator=g, dtype=torch.float64)
    Y = X.sum(1, keepdim=True)
    model = sciprune.MLP(2, [3], 1, "tanh", seed=0).double()
    rec = _Rates()
    sciprune.fit(model, (X, Y), config, hooks=[rec])
    return rec.rates


@pytest.mark.parametrize("schedule", ["cosine", "step", "constant"])
@pytest.mark.parametrize("start", [0, 3, 7])
def test_resumed_schedule_continues_the_uninterrupted_one(schedule, start):
    full = _rates(TrainConfig(epochs=10, lr=0.1, lr_schedule=schedule, step_size=2, gamma=0.5, batch_size=8))
    resumed = _rates(TrainConfig(epochs=10 - start, lr=0.1, lr_schedule=schedule, step_size=2, gamma=0.5,
                                 batch_size=8, lr_start_epoch=start))
    assert resumed == full[start:]
    if schedule != "constant" and start:
        assert resumed[0] < 0.1


def test_plateau_cannot_be_resumed_and_bad_values_are_one_line():
    with pytest.raises(SciPruneError, match="plateau"):
        TrainConfig(lr_schedule="plateau", lr_start_epoch=2)
    for bad in (-1, 1.5, True):
        with pytest.raises(SciPruneError, match="lr_start_epoch"):
            TrainConfig(lr_start_epoch=bad)


def test_the_ensemble_engine_resumes_the_schedule_as_fit_does():
    from sciprune.ensemble import fit_many

    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 2, generator=g, dtype=torch.float64)
    Y = torch.sin(X).sum(1, keepdim=True)
    cfgs = [TrainConfig(epochs=6, lr=0.05, lr_schedule=s, step_size=2, batch_size=10, lr_start_epoch=4, seed=k)
            for k, s in enumerate(["cosine", "step"])]
    alone = [sciprune.MLP(2, [4], 1, "tanh", seed=k).double() for k in range(2)]
    many = [sciprune.MLP(2, [4], 1, "tanh", seed=k).double() for k in range(2)]
    for m, c in zip(alone, cfgs):
        sciprune.fit(m, (X, Y), c)
    fit_many(many, (X, Y), cfgs)
    for a, b in zip(alone, many):
        for pa, pb in zip(a.parameters(), b.parameters()):
            torch.testing.assert_close(pb, pa, rtol=1e-10, atol=1e-12)
