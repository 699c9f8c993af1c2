"""Data layer: PDEBench readers, coordinate-regression tasks, noise laws, classification sets.

The generator (``sciprune.data.diffsorp``) is imported on its own, not from here.
"""

from ._types import TaskData
from .classification import (
    classification_task,
    convert_idx_to_h5,
    load_classification,
    load_digits_default,
    load_mnist_idx,
    read_classification_h5,
    read_idx,
    write_classification_h5,
    write_idx,
)
from .coords import coordinate_task, grid_inputs, split_indices
from .info import describe_file
from .noise import NOISE_KINDS, NoiseModel
from .pdebench import PDEBenchFile, open_pdebench

__all__ = [
    "TaskData",
    "open_pdebench",
    "PDEBenchFile",
    "NoiseModel",
    "NOISE_KINDS",
    "coordinate_task",
    "grid_inputs",
    "split_indices",
    "read_idx",
    "write_idx",
    "load_mnist_idx",
    "write_classification_h5",
    "read_classification_h5",
    "convert_idx_to_h5",
    "load_digits_default",
    "classification_task",
    "load_classification",
    "describe_file",
]
