"""The ensemble engine: train many same-shaped small networks at once.

Stacked parameters (``(M, *shape)`` per name), one batched forward, one optimiser step on the stacks;
member by member the result equals :func:`sciprune.fit`. See :func:`fit_ensemble`; scoring and
pruning of the members likewise: :func:`score_ensemble`, :func:`prune_ensemble`. Training hooks see
an :class:`EnsembleFitState` whose ``members`` are the member modules themselves.
"""

from ._evaluate import evaluate_ensemble
from ._fit import (
    ENSEMBLE_OPTIMIZERS,
    ENSEMBLE_SCHEDULES,
    fit_ensemble,
)
from ._hooks import EnsembleFitState
from ._many import fit_many
from ._memory import member_bytes, members_per_batch
from ._prune import batched_methods, prune_ensemble, score_ensemble
from ._stack import (
    architecture_key,
    ensemble_forward,
    group_by_architecture,
    is_plain_chain,
    stack_masks,
    stack_models,
    unstack,
)

__all__ = [
    "fit_ensemble", "fit_many", "evaluate_ensemble", "EnsembleFitState",
    "stack_models", "stack_masks", "unstack", "ensemble_forward", "is_plain_chain",
    "architecture_key", "group_by_architecture",
    "member_bytes", "members_per_batch",
    "score_ensemble", "prune_ensemble", "BATCHED_METHODS", "batched_methods",
    "ENSEMBLE_OPTIMIZERS", "ENSEMBLE_SCHEDULES",
]


def __getattr__(name: str):
    if name == "BATCHED_METHODS":  # the criteria with a batched implementation, read from the registry
        return batched_methods()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
