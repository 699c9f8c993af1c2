"""sciprune: pruning the fully-connected surrogates of physical simulations."""

from .compaction import compact
from .hooks import FitState
from .lobster import Lobster, ScaledLobster
from .lottery import lottery_ticket, lottery_tickets
from .lottery_rewind import Rewind, random_mask, reinitialize, rewind
from .criteria import available as methods
from .masks import MaskedStep, get_masks, set_masks, sparsity
from .models import MLP, build_model, describe, lenet_300_100
from .neurons import neuron_sparsity
from .obs_layer import apply_obs, obs_layer_plan
from .export import export_onnx
from .obs_network import obs_network_plan
from .procedure import GradualPruning, prune_scheduled
from .pruning import PrunePlan, PruneReport, apply_plan, plan, prune, scores
from .schedules import Cubic, Iterative, MultiStep, OneShot, parse_schedule
from .surrogate import Surrogate, load, save
from .training import History, TrainConfig, fit

__version__ = "0.1.0"

__all__ = [
    "MLP", "lenet_300_100", "build_model", "describe",
    "scores", "prune", "PruneReport", "plan", "apply_plan", "PrunePlan", "methods",
    "prune_scheduled", "GradualPruning", "OneShot", "MultiStep", "Iterative", "Cubic", "parse_schedule",
    "get_masks", "set_masks", "sparsity", "neuron_sparsity", "MaskedStep", "compact",
    "fit", "TrainConfig", "History", "FitState",
    "Lobster", "ScaledLobster", "lottery_ticket", "lottery_tickets", "Rewind", "rewind", "reinitialize",
    "random_mask", "obs_layer_plan", "apply_obs", "obs_network_plan", "export_onnx",
    "Surrogate", "load", "save",
    "__version__",
]
