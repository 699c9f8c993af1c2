"""The documentation stays true: the CLI reference matches the CLI, the README opens with the two commands,
every page is in the mkdocs nav, no link leaves docs/, the API reference is generated, CI builds the site."""

import importlib.util
import re
from pathlib import Path

import pytest

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


# --- the documentation site (mkdocs.yml, docs/) --------------------------------------------------

DOCS = ROOT / "docs"
#: The public modules whose reference is generated from their docstrings (``::: module`` blocks).
REFERENCED_MODULES = [
    "sciprune", "sciprune.data", "sciprune.curvature", "sciprune.diagnostics", "sciprune.ensemble",
    "sciprune.sweep", "sciprune.metrics", "sciprune.errors", "sciprune.outputs", "sciprune.losses",
    "sciprune.schedules", "sciprune.procedure", "sciprune.hooks", "sciprune.lottery", "sciprune.lottery_rewind",
    "sciprune.lobster", "sciprune.lobster_threshold", "sciprune.neurons", "sciprune.compaction",
    "sciprune.compact_training", "sciprune.flatness", "sciprune.neuron_rounds",
]
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _nav_pages(node) -> list[str]:
    """The page paths named in a mkdocs ``nav`` entry, recursively."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in _nav_pages(v)]
    return [p for v in node for p in _nav_pages(v)]


def _mkdocs_config() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def _pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = _nav_pages(_mkdocs_config()["nav"])
    on_disk = {p.relative_to(DOCS).as_posix() for p in _pages()}
    assert sorted(on_disk - set(nav)) == [], "pages missing from mkdocs.yml nav"
    assert sorted(set(nav) - on_disk) == [], "nav entries without a page"
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.relative_to(DOCS).as_posix())
def test_relative_links_stay_inside_docs_and_exist(page: Path):
    text = _FENCE.sub("", page.read_text())
    bad = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue                                   # http(s), mailto, same-page anchors
        path = (page.parent / target.split("#")[0]).resolve()
        if not path.is_relative_to(DOCS.resolve()) or not path.exists():
            bad.append(target)
    assert bad == [], f"{page.name}: links outside docs/ or to missing files (mkdocs --strict fails)"


def test_api_reference_is_generated_for_every_public_module():
    blocks = set()
    for page in (DOCS / "reference").glob("*.md"):
        blocks |= set(re.findall(r"^::: *([\w.]+)", page.read_text(), re.M))
    assert sorted(set(REFERENCED_MODULES) - blocks) == []
    plugins = _mkdocs_config()["plugins"]
    assert any(isinstance(p, dict) and "mkdocstrings" in p for p in plugins)


def test_ci_builds_the_docs_strictly_outside_the_repository():
    ci = (ROOT / ".ci" / "run").read_text()
    build = next(l for l in ci.splitlines() if "mkdocs build" in l)
    assert "--strict" in build and "-d " in build and "'.[docs]'" in build
    assert " -q" not in build, "mkdocs -q hides the warnings that --strict counts"
    assert ci.index("mkdocs build") > ci.index("pip install -e '.[test]' && pytest")
