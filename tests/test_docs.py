"""The documentation stays true: the CLI reference matches the CLI; the README opens with the two commands."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("make_cli_reference", ROOT / "docs" / "make_cli_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert (ROOT / "docs" / "cli.md").read_text() == mod.render(), "run: python docs/make_cli_reference.py"


def test_readme_opens_with_the_two_commands_and_ci_runs_the_tests():
    lines = [l for l in (ROOT / "README.md").read_text().splitlines() if l.strip()]
    block = "\n".join(lines[:5])
    assert "pip install -e . && sciprune run cases/quickstart.toml" in block
    assert "pip install -e '.[test]' && pytest" in block
    assert "pip install -e '.[test]' && pytest" in (ROOT / ".ci" / "run").read_text()
