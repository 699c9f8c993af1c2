"""The batched paths of ``obd``, ``lm`` and ``qm`` (``sciprune sweep``'s ensemble scoring) against the
single-model criteria, member by member, in float64 (rtol 1e-12 of the largest score).

``tests/test_ensemble_prune.py`` runs every batched method over its shared problems at the default
options; here: the options (``examples`` drawn per member with its own seed, ``locality``), chunking,
both losses, prior masks, float32, bad options, and the cost (one stacked forward per chunk).
"""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

import sciprune
from sciprune.chain import Walker
from sciprune.ensemble import BATCHED_METHODS, score_ensemble
from sciprune.ensemble import _prune as ens_prune
from sciprune.errors import SciPruneError
from sciprune.pruning import score_result

F64 = torch.float64
METHODS = ["obd", "lm", "qm"]


@pytest.fixture
def no_loop(monkeypatch):
    """Fail if the ensemble falls back to scoring the members one by one."""
    def boom(*a, **k):
        raise AssertionError("the per-member loop ran for a batched method")
    monkeypatch.setattr(ens_prune, "score_result", boom)


def _members(K: int, *, labels: bool, own_x: bool, M: int = 3, n: int = 50, masked: bool = False, dtype=F64):
    g = torch.Generator().manual_seed(K + 10 * labels + 100 * own_x)
    models = [sciprune.MLP(3, [6, 5], K, "tanh", seed=m).to(dtype) for m in range(M)]
    X = torch.randn(n, 3, generator=g, dtype=dtype)
    datas = []
    for _ in range(M):
        Xm = torch.randn(n, 3, generator=g, dtype=dtype) if own_x else X
        Y = torch.randint(0, K, (n,), generator=g) if labels else torch.sin(Xm[:, :1]) + 0.3 * torch.randn(
            n, K, generator=g, dtype=dtype)
        datas.append((Xm, Y))
    if masked:
        for m, model in enumerate(models):
            sciprune.prune(model, "magnitude" if m % 2 else "random", 0.25 + 0.1 * m, seed=m)
    return models, datas


def _check(models, datas, method, seeds, rtol=1e-12, **options):
    got = score_ensemble(models, method, datas, seeds=seeds, **options)
    for m, (model, r) in enumerate(zip(models, got)):
        d = datas[m] if isinstance(datas, list) else datas
        s = seeds[m] if isinstance(seeds, list) else seeds
        ref = score_result(model, method, d, seed=s, **options)  # the single-model criterion
        assert r.bias_shifts is None and list(r.scores) == list(ref.scores)
        for n in ref.scores:
            assert r.scores[n].dtype == F64
            assert_close(r.scores[n], ref.scores[n], rtol=rtol, what=f"{method} member {m} {n}")


def test_all_three_are_batched():
    assert set(METHODS) <= set(BATCHED_METHODS)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("K, labels, own_x", [(1, False, False), (3, False, True), (4, True, False), (3, True, True)],
                         ids=["mse-K1", "mse-K3-ownX", "ce-K4", "ce-K3-ownX"])
def test_examples_and_locality_per_member(method, K, labels, own_x, no_loop):
    """Each member draws its own ``examples`` rows with its own seed; chunks of 7 rows."""
    models, datas = _members(K, labels=labels, own_x=own_x, masked=True)
    options = {"examples": 17, "batch_size": 7}
    if method != "obd":
        options["locality"] = 0.25
    _check(models, datas, method, [3, 11, 4], **options)


@pytest.mark.parametrize("method", METHODS)
def test_shared_data_same_seed_and_all_rows(method, no_loop):
    """One shared (X, Y) and one seed (the members draw the same rows); ``examples`` >= N is every row."""
    models, datas = _members(2, labels=False, own_x=False)
    _check(models, datas[0], method, 5, examples=20)
    _check(models, datas[0], method, 5, examples=500, batch_size=16)


@pytest.mark.parametrize("method", METHODS)
def test_float32_members(method, no_loop):
    models, datas = _members(3, labels=True, own_x=True, dtype=torch.float32)
    _check(models, datas, method, [0, 1, 2], rtol=1e-5)


@pytest.mark.parametrize("method, option, value", [
    ("obd", "examples", 0), ("lm", "examples", 2.5), ("qm", "locality", -1.0), ("lm", "locality", float("nan"))])
def test_bad_options_raise_one_line(method, option, value, no_loop):
    models, datas = _members(1, labels=False, own_x=False, M=2)
    with pytest.raises(SciPruneError) as err:
        score_ensemble(models, method, datas, **{option: value})
    assert option in str(err.value) and repr(value) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("method", METHODS)
def test_one_stacked_forward_per_chunk(method, monkeypatch, no_loop):
    """QM's gradient and GGN diagonal come from the same walk: as many forward passes as chunks."""
    calls = []
    forward = Walker.forward
    monkeypatch.setattr(Walker, "forward", lambda self, x, **k: calls.append(x.shape) or forward(self, x, **k))
    models, datas = _members(3, labels=True, own_x=True, n=50)
    score_ensemble(models, method, datas, batch_size=20)
    assert [c[:2] for c in calls] == [(3, 20), (3, 20), (3, 10)]
