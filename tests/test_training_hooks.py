"""Training hooks in fit, and masks that change during training (held, optimiser state zeroed)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sciprune
from sciprune.errors import SciPruneError
from sciprune.masks import mask_pairs, set_masks
from sciprune.training import TrainConfig, fit

F64 = torch.float64
STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def _data(n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(n, 2, generator=g, dtype=F64) * 2 - 1
    return X, torch.sin(math.pi * X[:, :1]) * X[:, 1:]


def _model(seed=0):
    return sciprune.MLP(2, [4], 1, "tanh", seed=seed).to(F64)


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _pruned_state(opt, model) -> float:
    """Largest |optimiser state| over the pruned entries of every masked parameter."""
    worst = 0.0
    for p, m in mask_pairs(model):
        for key, v in opt.state.get(p, {}).items():
            if key in STATE_KEYS:
                worst = max(worst, float(v[~m].abs().max()) if bool((~m).any()) else 0.0)
    return worst


class Recorder:
    """Records every event with the values a hook sees."""

    def __init__(self):
        self.events = []

    def after_backward(self, s):
        grads = all(p.grad is not None for p in s.model.parameters())
        self.events.append(("after_backward", s.step, s.epoch, float(s.loss), grads, _weights(s.model)))

    def after_step(self, s):
        self.events.append(("after_step", s.step, s.epoch, float(s.loss), None, _weights(s.model)))

    def end_of_epoch(self, s):
        self.events.append(("end_of_epoch", s.step, s.epoch, s.train_loss, s.val_loss, None))


# --------------------------------------------------------------------------- when and with what


def test_hooks_called_at_the_right_times_with_the_right_values():
    X, Y = _data(20)
    Xv, Yv = _data(8, seed=1)
    rec, reported = Recorder(), {}
    epochs, bs = 5, 8  # 3 batches per epoch (8, 8, 4)
    cfg = TrainConfig(lr=1e-2, epochs=epochs, batch_size=bs, eval_every=2, seed=3)
    hist = fit(_model(), (X, Y), cfg, val=(Xv, Yv), hooks=[rec],
               progress=lambda e, E, tl, vl: reported.__setitem__(e, (tl, vl)))
    kinds = [e[0] for e in rec.events]
    assert kinds == (["after_backward", "after_step"] * 3 + ["end_of_epoch"]) * epochs
    steps = [e[1] for e in rec.events if e[0] == "after_step"]
    assert steps == list(range(1, 3 * epochs + 1))
    assert [e[1] for e in rec.events if e[0] == "after_backward"] == steps  # the step about to be taken
    assert [e[2] for e in rec.events if e[0] == "end_of_epoch"] == list(range(1, epochs + 1))
    for i, e in enumerate(rec.events):
        if e[0] == "after_backward":
            assert e[4]  # gradients are there
            assert rec.events[i + 1][3] == e[3]  # the same batch loss in after_step
            before = rec.events[i - 1][5] if i > 0 and rec.events[i - 1][0] == "after_step" else None
            if before is not None:  # no optimiser step between the previous after_step and this backward
                assert all(torch.equal(before[n], e[5][n]) for n in before)
            after = rec.events[i + 1][5]
            assert any(not torch.equal(after[n], e[5][n]) for n in after)  # the step happened in between
    ends = {e[2]: (e[3], e[4]) for e in rec.events if e[0] == "end_of_epoch"}
    assert sorted(reported) == hist.epoch == [2, 4, 5]
    for epoch, (tl, vl) in ends.items():
        if epoch in reported:
            assert (tl, vl) == reported[epoch]
        else:
            assert math.isnan(vl) and math.isfinite(tl)


def test_lbfgs_calls_after_backward_on_every_evaluation():
    X, Y = _data()
    rec = Recorder()
    fit(_model(), (X, Y), TrainConfig(optimizer="lbfgs", lr=0.5, epochs=2), hooks=[rec])
    kinds = [e[0] for e in rec.events]
    assert kinds.count("after_step") == 2 and kinds.count("end_of_epoch") == 2
    assert kinds.count("after_backward") > 2  # L-BFGS evaluates the loss several times per step


def test_stop_ends_training_after_the_current_step():
    X, Y = _data(20)

    class StopAt:
        def __init__(self):
            self.steps = 0

        def after_step(self, s):
            self.steps += 1
            s.stop = s.step == 7

    hook = StopAt()
    hist = fit(_model(), (X, Y), TrainConfig(lr=1e-2, epochs=50, batch_size=8, eval_every=5), hooks=[hook])
    assert hook.steps == 7
    assert hist.epoch == [3]  # step 7 is the first batch of epoch 3, recorded when it stops


@pytest.mark.parametrize("hooks, says", [
    ("after_step", "hooks must be None or a list"),
    ([object()], "hooks[0] (object) has none of the methods"),
    ([type("H", (), {"after_step": 3})()], "hooks[0].after_step must be a method"),
])
def test_bad_hooks_refused_in_one_line(hooks, says):
    X, Y = _data()
    with pytest.raises(SciPruneError) as err:
        fit(_model(), (X, Y), TrainConfig(epochs=1), hooks=hooks)
    assert says in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- no hooks: nothing changes


class Noop:
    def after_step(self, s):
        pass


@pytest.mark.parametrize("optimizer", ["adam", "sgd", "lbfgs"])
def test_empty_hook_list_is_bitwise_the_same(optimizer):
    X, Y = _data(40)
    Xv, Yv = _data(10, seed=1)
    cfg = TrainConfig(optimizer=optimizer, lr=0.5 if optimizer == "lbfgs" else 1e-2, epochs=6,
                      batch_size=None if optimizer == "lbfgs" else 16, weight_decay=1e-3, patience=3,
                      lr_schedule="step", step_size=2)
    runs = []
    for hooks in (None, [], [Noop()]):
        model = _model(seed=2)
        sciprune.prune(model, "magnitude", 0.4)
        hist = fit(model, (X, Y), cfg, val=(Xv, Yv), hooks=hooks)
        runs.append((_weights(model), hist.train_loss, hist.val_loss))
    for w, tl, vl in runs[1:]:
        assert tl == runs[0][1] and vl == runs[0][2]
        assert all(torch.equal(w[n], runs[0][0][n]) for n in w)


# --------------------------------------------------------------------------- masks changed by a hook


class RisingPrune:
    """Every ``every`` steps prune by magnitude to a ratio rising linearly to ``final`` at ``until``."""

    def __init__(self, every=10, final=0.75, until=5000):
        self.every, self.final, self.until, self.prunes = every, final, until, 0

    def after_step(self, s):
        if s.step % self.every == 0:
            sciprune.prune(s.model, "magnitude", self.final * min(s.step, self.until) / self.until)
            self.prunes += 1


class Check:
    """Listed after the pruning hook: after every step, pruned weights are exactly zero and masks
    only shrink; after every mask change (and every 97th step) the pruned entries' optimiser state
    is zero (that check is the costly one)."""

    def __init__(self):
        self.bad_weights = self.bad_state = self.grown = self.checks = 0
        self.version, self.masks, self.dropped, self.optimizer = None, None, [], None

    def after_step(self, s):
        self.optimizer = s.optimizer
        changed = sciprune.masks.mask_version() != self.version
        if changed:
            self.version = sciprune.masks.mask_version()
            masks = [m.clone() for _, m in mask_pairs(s.model)]
            if self.masks is not None:
                self.grown += sum(int((m & ~o).sum()) for m, o in zip(masks, self.masks))
            self.masks = masks
            self.dropped = [(p, ~m) for p, m in mask_pairs(s.model)]
        for p, off in self.dropped:
            self.bad_weights += bool(p.detach()[off].any())
        if changed or s.step % 97 == 0:
            self.bad_state += _pruned_state(s.optimizer, s.model) > 0
            self.checks += 1


@pytest.mark.slow
@pytest.mark.parametrize("optimizer, wd", [("adam", 0.0), ("adamw", 1e-2), ("sgd", 0.0)])
def test_pruning_hook_over_10000_steps_holds_every_pruned_weight_at_zero(optimizer, wd):
    X, Y = _data(8)
    model = _model()
    prune, check = RisingPrune(), Check()
    lr = 1e-2 if optimizer != "sgd" else 5e-2
    cfg = TrainConfig(optimizer=optimizer, lr=lr, epochs=10_000, weight_decay=wd, momentum=0.9)
    fit(model, (X, Y), cfg, hooks=[prune, check])
    assert prune.prunes == 1000 and check.checks > 1000
    assert check.bad_weights == 0 and check.bad_state == 0 and check.grown == 0
    n_pruned = sum(int((~m).sum()) for _, m in mask_pairs(model))
    assert n_pruned == round(0.75 * 12)  # of the 2x4 + 4x1 weights
    for p, m in mask_pairs(model):
        assert bool((p.detach()[~m] == 0).all())
    assert _pruned_state(check.optimizer, model) == 0.0


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_hook_pruning_equals_a_hand_written_loop(optimizer):
    """Reference: the same training written by hand, pruning at step k, zeroing the optimiser state
    of the newly pruned entries by hand and building a new MaskedStep; bitwise equal in float64."""
    X, Y = _data(12)
    k, total = 7, 20
    cfg = TrainConfig(optimizer=optimizer, lr=1e-2, epochs=total, weight_decay=1e-2, momentum=0.9)

    class PruneAt:
        def after_step(self, s):
            if s.step == k:
                sciprune.prune(s.model, "magnitude", 0.5)

    class Grab:
        def after_step(self, s):
            grabbed.append(s.optimizer)

    model, grabbed = _model(seed=4), []
    fit(model, (X, Y), cfg, hooks=[PruneAt(), Grab()])

    ref = _model(seed=4)
    opt = sciprune.training._make_optimizer(ref.parameters(), cfg)
    step = sciprune.MaskedStep(opt, ref)
    for i in range(1, total + 1):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.mse_loss(ref(X), Y).backward()
        step()
        if i == k:
            sciprune.prune(ref, "magnitude", 0.5)
            with torch.no_grad():
                for p, m in mask_pairs(ref):
                    for key in STATE_KEYS:
                        if key in opt.state[p]:
                            opt.state[p][key][~m] = 0.0
            step = sciprune.MaskedStep(opt, ref)
    a, b = _weights(model), _weights(ref)
    assert all(torch.equal(a[n], b[n]) for n in a)
    mine, theirs = grabbed[-1].state, opt.state
    for p, q in zip(model.parameters(), ref.parameters()):
        for key, v in theirs[q].items():
            assert torch.equal(mine[p][key], v), key


def test_lbfgs_history_cleared_when_a_mask_changes():
    X, Y = _data()
    model = _model()
    seen = {}

    class PruneAt3:
        def after_step(self, s):
            if s.step == 3:
                seen["before"] = len(s.optimizer.state)
                sciprune.prune(s.model, "magnitude", 0.5)

    class Look:  # runs after PruneAt3 has returned, when fit has picked up the new masks
        def after_step(self, s):
            seen.setdefault(s.step, len(s.optimizer.state))

    fit(model, (X, Y), TrainConfig(optimizer="lbfgs", lr=0.5, epochs=6), hooks=[PruneAt3(), Look()])
    assert seen == {"before": 1, 1: 1, 2: 1, 3: 0, 4: 1, 5: 1, 6: 1}
    for p, m in mask_pairs(model):
        assert bool((p.detach()[~m] == 0).all())


def test_early_stopping_restores_best_weights_under_the_final_masks():
    """Best weights from before a prune are restored, then multiplied by the masks held at the end."""
    X, Y = _data(20)
    Xv, Yv = _data(8, seed=5)
    saved = {}

    class PruneThenSpoil:
        def end_of_epoch(self, s):
            saved[s.epoch] = _weights(s.model)  # the weights the evaluation of this epoch saw
            if s.epoch == 2:
                sciprune.prune(s.model, "magnitude", 0.5)
            if s.epoch >= 2:  # make every later epoch worse on validation
                with torch.no_grad():
                    s.model.linear1.bias.add_(10.0)

    model = _model()
    hist = fit(model, (X, Y), TrainConfig(lr=1e-2, epochs=50, patience=3), val=(Xv, Yv), hooks=[PruneThenSpoil()])
    assert hist.stopped_early and hist.best_epoch in (1, 2) and hist.epoch[-1] == hist.best_epoch + 3
    masks = dict(sciprune.get_masks(model))
    assert any(not bool(m.all()) for m in masks.values())
    best = saved[hist.best_epoch]
    for n, p in model.named_parameters():
        expected = best[n] * masks[n] if n in masks else best[n]
        assert torch.equal(p.detach(), expected), n


# --------------------------------------------------------------------------- MaskedStep in a user's loop


def test_maskedstep_holds_masks_set_after_it_was_built():
    X, Y = _data()
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    step = sciprune.MaskedStep(opt, model)
    assert step.pairs == []
    for i in range(30):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), Y).backward()
        step()
        if i == 10:
            set_masks(model, {"linear0.weight": torch.rand(4, 2, generator=torch.Generator().manual_seed(0)) > 0.5})
        if i == 15:
            first = step.pairs
        if i == 20:
            set_masks(model, {"linear1.weight": torch.tensor([[True, False, True, False]])})
    assert len(step.pairs) == 2 and step.pairs[0][1] is first[0][1]  # the unchanged float copy is reused
    for p, m in mask_pairs(model):
        assert bool((p.detach()[~m] == 0).all())
    assert _pruned_state(opt, model) == 0.0
    sciprune.masks.remove_masks(model)
    assert step.refresh() and step.pairs == []


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 15), st.integers(0, 2**31 - 1)), min_size=1, max_size=4),
       st.sampled_from(["adam", "adamw", "sgd"]))
def test_random_mask_changes_are_held_and_nested(changes, optimizer):
    """Random masks set at random steps of a user's loop: pruned weights stay exactly zero after
    every step, their optimiser state is zero, and masks only shrink."""
    X, Y = _data(8)
    model = _model()
    opt = sciprune.training._make_optimizer(model.parameters(), TrainConfig(optimizer=optimizer, lr=1e-2,
                                                                             weight_decay=1e-2))
    step = sciprune.MaskedStep(opt, model)
    at = {}
    for when, seed in changes:
        at.setdefault(when, seed)
    prev = None
    for i in range(1, 17):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(X), Y).backward()
        step()
        if i in at:
            g = torch.Generator().manual_seed(at[i])
            set_masks(model, {n: torch.rand(p.shape, generator=g) > 0.3
                              for n, p in model.named_parameters() if n.endswith("weight")})
        masks = [m.clone() for _, m in mask_pairs(model)]
        if prev:
            assert all(not bool((m & ~o).any()) for m, o in zip(masks, prev))
        prev = masks
        for p, m in mask_pairs(model):
            assert bool((p.detach()[~m] == 0).all())
    step.refresh()
    assert _pruned_state(opt, model) == 0.0
