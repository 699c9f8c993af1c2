"""The pruned-network variables of a study's results, built from per-run records.

A prune run's record (:meth:`sciprune.engine.Outcome.record`, also what ``sciprune sweep`` stores as
JSON) holds the metrics just pruned and fine-tuned, the achieved sparsity and, when the case keeps
schedule steps (``[prune] keep_steps``), per kept step its sparsity, metrics after pruning and after
the training that follows, and that training's loss per epoch. :func:`prune_variables` turns records
into the results' arrays, for one block of ``sciprune run`` or the whole grid of ``sciprune sweep``,
so that both write the same layout:

- ``<metric>`` over (lead..., method, ratio, stage), stage = pruned | finetuned; ``sparsity`` over
  (lead..., method, ratio);
- with kept steps: ``step_<metric>`` over (lead..., method, ratio, step, stage) ("finetuned" is the
  training that follows the step; NaN where none does), ``step_sparsity`` over (..., step) and
  ``step_train_loss`` over (..., step, epoch); ``step`` numbers steps from 1, NaN where a ratio's
  schedule has fewer steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["STAGES", "prune_variables", "steps_problem", "diagnostic_variables", "diagnostics_problem",
           "line_variables", "lines_problem"]

STAGES = ("pruned", "finetuned")
_STEP_STAGES = ("pruned", "trained")  # a step record's keys for the two stages


def prune_variables(metrics: Sequence[str], lead_dims: tuple[str, ...], lead_shape: tuple[int, ...],
                    labels: Sequence[str], ratios: Sequence[float],
                    items: Iterable[tuple[tuple[int, ...], str, float, dict]], *,
                    keeps_steps: bool) -> tuple[dict, dict]:
    """``(data_vars, extra coords)`` of the prune runs ``items`` = [(lead index, label, ratio, record)]."""
    items = list(items)
    shape = tuple(lead_shape) + (len(labels), len(ratios))
    res = {m: np.full(shape + (len(STAGES),), np.nan) for m in metrics}
    spars = np.full(shape, np.nan)
    steps: list[int] = []
    epochs = 0
    if keeps_steps:
        steps = sorted({int(k) for *_, rec in items for k in rec.get("steps", {})})
        epochs = max([len(s["train_loss"]) for *_, rec in items for s in rec.get("steps", {}).values()
                      if s.get("train_loss")] or [0])
    s_res = {m: np.full(shape + (len(steps), len(STAGES)), np.nan) for m in metrics}
    s_spars = np.full(shape + (len(steps),), np.nan)
    s_loss = np.full(shape + (len(steps), epochs), np.nan)
    for lead, label, ratio, rec in items:
        j = tuple(lead) + (labels.index(label), list(ratios).index(ratio))
        for s, stage in enumerate(STAGES):
            for m in metrics:
                res[m][j + (s,)] = rec[stage][m]
        spars[j] = rec["sparsity"]
        for key, step in rec.get("steps", {}).items() if keeps_steps else ():
            t = j + (steps.index(int(key)),)
            s_spars[t] = step["sparsity"]
            for s, stage in enumerate(_STEP_STAGES):
                for m in metrics if step.get(stage) else ():
                    s_res[m][t + (s,)] = step[stage][m]
            loss = step.get("train_loss") or []
            s_loss[t][: len(loss)] = [math.nan if v is None else v for v in loss]
    inner = ("method", "ratio")
    data = {m: (lead_dims + inner + ("stage",), v) for m, v in res.items()}
    data["sparsity"] = (lead_dims + inner, spars)
    coords: dict = {}
    if keeps_steps:
        data.update({f"step_{m}": (lead_dims + inner + ("step", "stage"), v) for m, v in s_res.items()})
        data["step_sparsity"] = (lead_dims + inner + ("step",), s_spars)
        data["step_train_loss"] = (lead_dims + inner + ("step", "epoch"), s_loss)
        coords = {"step": steps, "epoch": list(range(1, epochs + 1))}
    return data, coords


def _metrics_or_none(d: object, metrics: Sequence[str] | None) -> bool:
    if d is None:
        return True
    return isinstance(d, dict) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d.values()) \
        and all(m in d for m in (metrics or ()))


def steps_problem(steps: object, metrics: Sequence[str] | None = None) -> str | None:
    """What is wrong with a stored record's ``steps`` (step number -> step record), or None."""
    if not isinstance(steps, dict):
        return "'steps' is not an object"
    for key, step in steps.items():
        if not (isinstance(key, str) and key.isdigit() and int(key) >= 1):
            return f"'steps' has the key {key!r}, expected step numbers from 1"
        if not isinstance(step, dict) or not isinstance(step.get("sparsity"), (int, float)):
            return f"step {key} has no numeric 'sparsity'"
        if not all(_metrics_or_none(step.get(s), metrics) for s in _STEP_STAGES):
            return f"step {key}: 'pruned' or 'trained' is not an object of the metrics"
        loss = step.get("train_loss")
        if loss is not None and not (isinstance(loss, list) and all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in loss)):
            return f"step {key}: 'train_loss' is not a list of numbers"
    return None


def diagnostic_variables(lead_dims: tuple[str, ...], lead_shape: tuple[int, ...], labels: Sequence[str],
                         ratios: Sequence[float], prune_items: Iterable[tuple[tuple[int, ...], str, float, dict]],
                         dense_items: Iterable[tuple[tuple[int, ...], dict]]) -> tuple[dict, dict]:
    """``(data_vars, coords)`` of the records' ``diagnostics`` (:mod:`sciprune.study_diagnostics`):
    ``<name>`` over (lead..., method, ratio, its dimension in :data:`~sciprune.study_diagnostics.DIAGNOSTICS`)
    for the pruned networks and ``dense_<name>`` over (lead..., that dimension) for the dense ones; ``eig`` numbers eigenvalues from 1 (largest first),
    ``layer`` hidden layers and ``linear`` Linear layers from 1, ``batch`` has the labels of
    :data:`~sciprune.study_diagnostics.LABELS`; NaN where a network has fewer, or the diagnostic is not
    defined."""
    from .study_diagnostics import DIAGNOSTICS, LABELS

    prune_items, dense_items = list(prune_items), list(dense_items)
    diags = [rec.get("diagnostics") or {} for *_, rec in prune_items] + [rec.get("diagnostics") or {}
                                                                       for _, rec in dense_items]
    names = [n for n in DIAGNOSTICS if any(n in d for d in diags)]
    if not names:
        return {}, {}
    sizes = {dim: max(len(d[n]) for d in diags for n in names if n in d and DIAGNOSTICS[n] == dim)
             for dim in {DIAGNOSTICS[n] for n in names}}
    shape = tuple(lead_shape) + (len(labels), len(ratios))
    data: dict = {}
    for n in names:
        dim = DIAGNOSTICS[n]
        arr, dense = np.full(shape + (sizes[dim],), np.nan), np.full(tuple(lead_shape) + (sizes[dim],), np.nan)
        for lead, label, ratio, rec in prune_items:
            v = (rec.get("diagnostics") or {}).get(n)
            if v:
                arr[tuple(lead) + (labels.index(label), list(ratios).index(ratio))][: len(v)] = v
        for lead, rec in dense_items:
            v = (rec.get("diagnostics") or {}).get(n)
            if v:
                dense[tuple(lead)][: len(v)] = v
        data[n] = (lead_dims + ("method", "ratio", dim), arr)
        data[f"dense_{n}"] = (lead_dims + (dim,), dense)
    return data, {dim: LABELS[dim] if dim in LABELS else list(range(1, k + 1)) for dim, k in sizes.items()}


def diagnostics_problem(diag: object) -> str | None:
    """What is wrong with a stored record's ``diagnostics`` (name -> list of numbers), or None."""
    from .study_diagnostics import DIAGNOSTICS, LABELS

    if not isinstance(diag, dict):
        return "'diagnostics' is not an object"
    for name, values in diag.items():
        if name not in DIAGNOSTICS:
            return f"'diagnostics' has the unknown entry {name!r}"
        if not (isinstance(values, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                 for v in values)):
            return f"'diagnostics.{name}' is not a list of numbers"
        labels = LABELS.get(DIAGNOSTICS[name])
        if labels is not None and len(values) != len(labels):
            return f"'diagnostics.{name}' must have {len(labels)} values ({', '.join(labels)}), got {len(values)}"
    return None


def line_variables(lead_dims: tuple[str, ...], lead_shape: tuple[int, ...], pairs: Sequence[tuple[str, str]],
                   ratios: Sequence[float], n_points: int,
                   items: Iterable[tuple[tuple[int, ...], str, str, float, dict]]) -> tuple[dict, dict]:
    """``(data_vars, coords)`` of the loss lines ``items`` = [(lead index, a, b, ratio, {"train", "test"})]:
    ``line_train_loss`` / ``line_test_loss`` over (lead..., pair, ratio, alpha), pair ``"a->b"``,
    alpha = k / (n_points - 1); NaN for a line not computed."""
    if not pairs:
        return {}, {}
    shape = tuple(lead_shape) + (len(pairs), len(ratios), n_points)
    arrs = {k: np.full(shape, np.nan) for k in ("train", "test")}
    for lead, a, b, ratio, line in items:
        at = tuple(lead) + (list(pairs).index((a, b)), list(ratios).index(ratio))
        for k in arrs:
            arrs[k][at] = line[k]
    dims = lead_dims + ("pair", "ratio", "alpha")
    data = {f"line_{k}_loss": (dims, v) for k, v in arrs.items()}
    return data, {"pair": [f"{a}->{b}" for a, b in pairs], "alpha": list(np.linspace(0.0, 1.0, n_points))}


def lines_problem(lines: object, n_points: int | None = None) -> str | None:
    """What is wrong with a stored record's ``lines`` (partner label -> {"train": [...], "test": [...]})."""
    if not isinstance(lines, dict):
        return "'lines' is not an object"
    for partner, line in lines.items():
        if not isinstance(line, dict) or set(line) != {"train", "test"}:
            return f"'lines.{partner}' does not hold 'train' and 'test'"
        for k, v in line.items():
            if not (isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)) \
                    or (n_points is not None and len(v) != n_points):
                return f"'lines.{partner}.{k}' is not a list of {n_points or 'the'} numbers"
    return None

