"""Shared test settings."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a loaded 2-core machine OpenMP
    spin-waits make them tens of times slower; restore the setting afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def no_figures(monkeypatch):
    """``sciprune run`` without its figures (seconds of matplotlib each; they are tested in test_pipeline)."""
    import sciprune.pipeline

    monkeypatch.setattr(sciprune.pipeline, "_figures", lambda *args: None)


@pytest.fixture(scope="session")
def tiny_pdebench(tmp_path_factory):
    """A one-sample diffusion-sorption file on a 24 x 11 grid, made once per session; read-only for tests
    (a test that changes its data file makes its own)."""
    from sciprune.data.diffsorp import generate

    return generate(tmp_path_factory.mktemp("tiny") / "ds.h5", n_samples=1, nx=24, nt=11, mode="accurate", workers=1)
