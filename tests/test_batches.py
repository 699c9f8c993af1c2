"""Data normalisation: the finite-value check is cheap and still catches every bad entry."""

import pytest
import torch

from sciprune.errors import SciPruneError


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_finite_check_finds_one_bad_value(bad):
    from sciprune.batches import as_tensor

    a = torch.randn(1000, 7)
    a[123, 4] = bad
    with pytest.raises(SciPruneError, match="NaN or infinite"):
        as_tensor(a, name="X")


def test_finite_check_accepts_values_whose_sum_overflows():
    from sciprune.batches import as_tensor

    a = torch.full((100,), 3e38, dtype=torch.float32)  # finite, but the float32 sum is inf
    assert as_tensor(a).equal(a)
