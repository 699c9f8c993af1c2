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


@pytest.fixture
def no_robustness_figures(monkeypatch):
    """Every figure of ``sciprune report`` as an empty file (matplotlib costs a second each; the robustness
    figures are drawn in test_report_robustness.test_report_draws_robustness_figures_and_writes_the_tables)."""
    import sciprune.plots
    import sciprune.plots_robustness

    def empty(ds, path, **kw):
        open(path, "wb").close()

    monkeypatch.setattr(sciprune.plots_robustness, "plot_robustness", empty)
    monkeypatch.setattr(sciprune.plots, "plot_loss_vs_ratio", empty)


@pytest.fixture(scope="session")
def tiny_pdebench(tmp_path_factory):
    """A one-sample diffusion-sorption file on a 24 x 11 grid, made once per session; read-only for tests
    (a test that changes its data file makes its own)."""
    from sciprune.data.diffsorp import generate

    return generate(tmp_path_factory.mktemp("tiny") / "ds.h5", n_samples=1, nx=24, nt=11, mode="accurate", workers=1)
