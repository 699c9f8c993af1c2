"""Helpers shared by the numerical tests (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os

import torch

F64 = torch.float64


def assert_sweep_equals_run(run, sweep) -> None:
    """A study's results from ``sciprune sweep`` equal ``sciprune run``'s: the same methods in the same order
    and every per-method variable to rtol 1e-7 (the ensemble's fine-tuning rounds differently from one fit)."""
    import numpy as np

    assert list(sweep["method"].values) == list(run["method"].values)
    for v in run.data_vars:
        if "method" in run[v].dims:
            np.testing.assert_allclose(sweep[v].values, run[v].values, rtol=1e-7, atol=1e-12, err_msg=v)


def assert_close(actual, expected, *, rtol=1e-9, what=""):
    """Compare with a tolerance relative to the largest reference entry; say where they differ."""
    actual = torch.as_tensor(actual).detach().to(F64)
    expected = torch.as_tensor(expected).detach().to(F64)
    assert actual.shape == expected.shape, f"{what}: shapes {tuple(actual.shape)} vs {tuple(expected.shape)}"
    assert bool(torch.isfinite(actual).all()), f"{what}: non-finite entries"
    scale = max(float(expected.abs().max()), 1e-300)
    err = (actual - expected).abs()
    bad = err > rtol * scale
    if bool(bad.any()):
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        raise AssertionError(
            f"{what}: {int(bad.sum())} entries differ (max abs err {float(err.max()):.3e}, scale {scale:.3e}); "
            f"first at {idx}: {float(actual[idx]):.17g} vs {float(expected[idx]):.17g}"
        )


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, (str, os.PathLike)):
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def toml_text(tables: dict, _prefix: str = "") -> str:
    """A case file's text from nested dicts (scalars first, then ``[tables]`` and ``[sub.tables]``)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in tables.items() if not isinstance(v, dict)]
    for k, v in tables.items():
        if isinstance(v, dict):
            lines += ["", f"[{_prefix}{k}]", toml_text(v, f"{_prefix}{k}.")]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + ("\n" if not _prefix else "")


def tiny_case(output, data_file, **sections) -> str:
    """The text of a tiny regression case (a 2-4-1 network, a few epochs, magnitude at 0.5) on the
    PDEBench file ``data_file``, writing to ``output``. ``sections`` update its tables key by key, e.g.
    ``train={"epochs": 5}``, ``data={"generate": {...}}``, ``name="other"``."""
    case = {
        "name": "tiny", "output": output, "device": "cpu", "dtype": "float64", "seeds": [0], "save_models": False,
        "data": {"kind": "pdebench", "file": data_file, "sample": 0},
        "noise": {"kind": "uniform", "levels": [0.0]},
        "model": {"widths": [4], "activation": "tanh"},
        "train": {"lr": 1e-2, "epochs": 3, "batch_size": 64},
        "prune": {"methods": ["magnitude"], "ratios": [0.5]},
        "finetune": {"epochs": 1, "batch_size": 64},
    }
    for key, value in sections.items():
        case[key] = {**case.get(key, {}), **value} if isinstance(value, dict) else value
    return toml_text(case)
