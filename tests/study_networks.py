"""The networks of a one-seed, one-ratio tiny study rebuilt by hand (float64 on the CPU), to check the
study's ``[diagnostics]`` against the functions that compute them (imported as ``study_networks``)."""

from __future__ import annotations

import copy

import torch

import sciprune
from sciprune.pipeline import load_task, make_model, train_config


def trained_by_hand(case, seed: int = 0):
    """``(loaded, train, finetune, init, dense)``: the task of noise level 0 and ``seed`` as the study loads
    it, its training and fine-tuning settings, ``init()`` returning the untrained network, and ``dense``
    trained as the study trains it."""
    loaded = load_task(case, 0.0, seed, device="cpu", dtype=torch.float64)
    t = loaded.task
    train, finetune = train_config(case.train, seed), train_config(case.finetune, seed)

    def init():
        return make_model(case.model, t.in_features, t.out_features, seed, device="cpu", dtype=torch.float64)

    dense = init()
    sciprune.fit(dense, t, train)
    return loaded, train, finetune, init, dense


def rebuild(case, method: str = "magnitude", ratio: float = 0.5, seed: int = 0):
    """``(task, dense, pruned)``: noise level 0, ``seed``; the dense network trained as the study trains
    it, and a copy pruned by ``method`` at ``ratio`` and fine-tuned."""
    loaded, _, finetune, _, dense = trained_by_hand(case, seed)
    t = loaded.task
    pruned = copy.deepcopy(dense)
    sciprune.prune(pruned, method, ratio, t)
    sciprune.fit(pruned, t, finetune)
    return t, dense, pruned
