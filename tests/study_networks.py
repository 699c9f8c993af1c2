"""The networks of a one-seed, one-ratio tiny study rebuilt by hand (float64 on the CPU), to check the
study's ``[diagnostics]`` against the functions that compute them (imported as ``study_networks``)."""

from __future__ import annotations

import copy

import torch

import sciprune
from sciprune.pipeline import load_task, make_model, train_config


def rebuild(case, method: str = "magnitude", ratio: float = 0.5, seed: int = 0):
    """``(task, dense, pruned)``: noise level 0, ``seed``; the dense network trained as the study trains
    it, and a copy pruned by ``method`` at ``ratio`` and fine-tuned."""
    t = load_task(case, 0.0, seed, device="cpu", dtype=torch.float64).task
    dense = make_model(case.model, t.in_features, t.out_features, seed, device="cpu", dtype=torch.float64)
    sciprune.fit(dense, t, train_config(case.train, seed))
    pruned = copy.deepcopy(dense)
    sciprune.prune(pruned, method, ratio, t)
    sciprune.fit(pruned, t, train_config(case.finetune, seed))
    return t, dense, pruned
