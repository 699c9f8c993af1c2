"""Helpers shared by the numerical tests (imported as ``helpers``: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch

F64 = torch.float64


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
