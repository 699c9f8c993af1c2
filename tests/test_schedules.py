"""Pruning schedules: exact ends, monotone steps, the published formulas, dict round trips, bad input."""

import json
import math
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from malformed import assert_raises_user_error
from sciprune.schedules import Cubic, Iterative, MultiStep, OneShot, parse_schedule
from sciprune.selection import n_to_prune

targets = st.floats(0.0, 1.0, exclude_max=True, allow_nan=False)
fractions_open = st.floats(0.01, 0.99)
spacings = st.sampled_from(["linear", "geometric"])


@st.composite
def schedules(draw):
    kind = draw(st.sampled_from(["one-shot", "multi-step", "iterative-fraction", "iterative-levels", "cubic"]))
    if kind == "one-shot":
        return OneShot()
    if kind == "multi-step":
        return MultiStep(draw(st.integers(1, 200)), draw(spacings))
    if kind == "iterative-fraction":
        return Iterative(fraction=draw(fractions_open), budget_epochs=draw(st.integers(0, 50)))
    if kind == "iterative-levels":
        levels = sorted(set(draw(st.lists(targets, min_size=1, max_size=8))))
        return Iterative(levels=levels, budget_epochs=draw(st.integers(0, 50)))
    return Cubic(initial=draw(st.floats(0.0, 0.5)), start_step=draw(st.integers(0, 1000)),
                 n_updates=draw(st.integers(1, 100)), every=draw(st.integers(1, 1000)))


@settings(max_examples=300, deadline=None)
@given(schedules(), targets)
def test_every_schedule_ends_exactly_at_its_target_through_monotone_steps(schedule, p):
    if isinstance(schedule, Cubic) and p < schedule.initial:
        p = schedule.initial
    steps = schedule.targets(p)
    assert steps and steps[-1] == p
    assert all(0.0 <= s <= p for s in steps)
    assert all(a <= b for a, b in zip(steps, steps[1:]))
    if isinstance(schedule, Iterative):  # each level prunes something
        assert all(a < b for a, b in zip(steps, steps[1:]))


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 100), targets)
def test_linear_spacing_is_p_k_over_n(n, p):
    steps = MultiStep(n, "linear").targets(p)
    assert len(steps) == n
    for k, s in enumerate(steps, start=1):
        assert abs(s - float(Fraction(p) * k / n)) <= 1e-15


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 40), targets)
def test_geometric_spacing_keeps_one_minus_p_to_the_k_over_n(n, p):
    steps = MultiStep(n, "geometric").targets(p)
    assert len(steps) == n
    with localcontext() as ctx:
        ctx.prec = 34
        for k, s in enumerate(steps, start=1):
            kept = (Decimal(1) - Decimal(p)) ** (Decimal(k) / Decimal(n))
            assert abs(Decimal(1) - Decimal(s) - kept) <= Decimal("1e-15"), (k, s)


def test_geometric_matches_laurent_et_al_final_sparsity():
    """Their MLP target 1 - 0.8^20 in 20 geometric steps removes 20% of what remains at each step."""
    p = 1 - 0.8**20
    steps = MultiStep(20, "geometric").targets(p)
    for k, s in enumerate(steps, start=1):
        assert abs((1 - s) - 0.8**k) <= 1e-15


def _cubic_reference(si, sf, t0, n, dt, t) -> float:
    """Zhu & Gupta 2017, eq. (1), in exact rational arithmetic."""
    if t <= t0:
        return si
    if t >= t0 + n * dt:
        return sf
    return float(Fraction(sf) + (Fraction(si) - Fraction(sf)) * (1 - Fraction(t - t0, n * dt)) ** 3)


@settings(max_examples=100, deadline=None)
@given(st.floats(0.0, 0.5), st.floats(0.5, 0.999), st.integers(0, 500), st.integers(1, 50), st.integers(1, 300))
def test_cubic_matches_the_closed_form_at_every_step(si, sf, t0, n, dt):
    c = Cubic(initial=si, final=sf, start_step=t0, n_updates=n, every=dt)
    assert c.update_steps() == [t0 + k * dt for k in range(n + 1)]
    for t in range(0, t0 + n * dt + 2 * dt, max(1, dt // 3)):
        assert abs(c.sparsity_at(t) - _cubic_reference(si, sf, t0, n, dt, t)) <= 1e-15, t
    assert c.sparsity_at(0) == si and c.sparsity_at(t0) == si
    assert c.sparsity_at(t0 + n * dt) == sf and c.sparsity_at(t0 + n * dt + 12345) == sf
    free = Cubic(initial=si, start_step=t0, n_updates=n, every=dt)
    assert free.targets(sf) == [c.sparsity_at(t) for t in c.update_steps()]


@settings(max_examples=200, deadline=None)
@given(fractions_open, targets)
def test_iterative_fraction_levels_remove_that_share_of_what_remains(f, p):
    steps = Iterative(fraction=f, budget_epochs=1).targets(p)
    for k, s in enumerate(steps[:-1], start=1):
        assert abs((1 - s) - (1 - f) ** k) <= 1e-15
    assert 1 - (1 - f) ** len(steps) >= p - 1e-12  # no level is missing before the target


@settings(max_examples=200, deadline=None)
@given(fractions_open, targets, st.integers(1, 5000))
def test_iterative_with_a_total_follows_open_lth_counts(f, p, total):
    """open_lth: each level removes ceil(f * remaining) weights; selection's rounding prunes exactly those."""
    steps = Iterative(fraction=f, budget_epochs=1).targets(p, total=total)
    final = n_to_prune(p, total)
    expected, pruned = [], 0
    while pruned < final:
        pruned = min(pruned + math.ceil(f * (total - pruned)), final)
        expected.append(pruned)
    assert [n_to_prune(s, total) for s in steps] == (expected or [0])
    assert steps[-1] == p


def test_iterative_levels_below_the_target_then_the_target():
    it = Iterative(levels=[0.2, 0.5, 0.8], budget_epochs=2)
    assert it.targets(0.6) == [0.2, 0.5, 0.6]
    assert it.targets(0.5) == [0.2, 0.5]
    assert it.targets(0.9) == [0.2, 0.5, 0.8, 0.9]
    assert it.targets(0.1) == [0.1]


@settings(max_examples=200, deadline=None)
@given(schedules())
def test_dict_round_trip_through_json(schedule):
    d = schedule.to_dict()
    assert d["kind"] == schedule.name
    back = parse_schedule(json.loads(json.dumps(d)))
    assert back == schedule and type(back) is type(schedule)
    assert type(schedule).from_dict(d) == schedule


def test_parse_accepts_a_kind_name_and_a_schedule():
    assert parse_schedule("one-shot") == OneShot()
    m = MultiStep(3)
    assert parse_schedule(m) is m
    assert m.spacing == "linear" and m.needs_training is False
    assert Iterative(fraction=0.2, budget_epochs=1).needs_training and Cubic(n_updates=1, every=1).needs_training


@pytest.mark.parametrize("make,needles", [
    (lambda: parse_schedule({"kind": "gradual"}), ["schedule kind", "gradual", "multi-step"]),
    (lambda: parse_schedule({"steps": 3}), ["schedule kind", "None"]),
    (lambda: parse_schedule(3), ["schedule", "kind"]),
    (lambda: parse_schedule({"kind": "multi-step"}), ["multi-step", "steps"]),
    (lambda: parse_schedule({"kind": "multi-step", "steps": 3, "every": 2}), ["every", "allowed: steps, spacing"]),
    (lambda: parse_schedule({"kind": "one-shot", "steps": 1}), ["steps", "one-shot"]),
    (lambda: MultiStep(0), ["steps", ">= 1", "0"]),
    (lambda: MultiStep(2.0), ["steps", "integer"]),
    (lambda: MultiStep(True), ["steps", "integer"]),
    (lambda: MultiStep(3, "exp"), ["spacing", "geometric", "exp"]),
    (lambda: MultiStep(3).targets(1.0), ["target", "[0, 1)"]),
    (lambda: MultiStep(3).targets(-0.1), ["target", "[0, 1)"]),
    (lambda: OneShot().targets(float("nan")), ["target", "nan"]),
    (lambda: OneShot().targets("0.5"), ["target", "'0.5'"]),
    (lambda: Iterative(budget_epochs=1), ["exactly one of fraction", "levels"]),
    (lambda: Iterative(fraction=0.2, levels=[0.5], budget_epochs=1), ["exactly one"]),
    (lambda: Iterative(fraction=1.0, budget_epochs=1), ["fraction", "(0, 1)"]),
    (lambda: Iterative(fraction=0.0, budget_epochs=1), ["fraction", "(0, 1)"]),
    (lambda: Iterative(fraction=float("inf"), budget_epochs=1), ["fraction", "inf"]),
    (lambda: Iterative(levels=[0.5, 0.3], budget_epochs=1), ["levels", "strictly increasing"]),
    (lambda: Iterative(levels=[0.3, 0.3], budget_epochs=1), ["levels", "strictly increasing"]),
    (lambda: Iterative(levels=[0.3, 1.2], budget_epochs=1), ["levels entry", "1.2"]),
    (lambda: Iterative(levels=[], budget_epochs=1), ["levels", "non-empty"]),
    (lambda: Iterative(fraction=0.2, budget_epochs=-1), ["budget_epochs", ">= 0"]),
    (lambda: Iterative(fraction=1e-9, budget_epochs=1).targets(0.99), ["fraction", "levels", "at most"]),
    (lambda: parse_schedule({"kind": "iterative", "fraction": 0.2}), ["iterative", "budget_epochs"]),
    (lambda: Cubic(n_updates=3, every=0), ["every", "dt", ">= 1"]),
    (lambda: Cubic(n_updates=0, every=10), ["n_updates", ">= 1"]),
    (lambda: Cubic(n_updates=2, every=10, start_step=-1), ["start_step", ">= 0"]),
    (lambda: Cubic(initial=float("nan"), n_updates=2, every=10), ["initial", "nan"]),
    (lambda: Cubic(initial=0.5, final=0.2, n_updates=2, every=10), ["final", ">= initial"]),
    (lambda: Cubic(final=0.5, n_updates=2, every=10).targets(0.6), ["final", "target"]),
    (lambda: Cubic(initial=0.5, n_updates=2, every=10).targets(0.4), ["target", "initial"]),
    (lambda: Cubic(n_updates=2, every=10).sparsity_at(5), ["final is not set"]),
    (lambda: MultiStep.from_dict({"kind": "one-shot"}), ["multi-step", "one-shot"]),
])
def test_bad_schedules_are_one_line_errors(make, needles):
    assert_raises_user_error(make, *needles)
