"""Regenerate docs/cli.md from the command line's own help: ``python docs/make_cli_reference.py``.

tests/test_docs.py fails when docs/cli.md is out of date.
"""

from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from sciprune.cli import cli

HEADER = """# Command-line reference

Generated from `sciprune ... --help` by `python docs/make_cli_reference.py`; do not edit by hand.
A user mistake (missing or malformed file, unknown case key, bad value) prints one line `Error: ...`
and exits with code 2.
"""


def _walk(group: click.Group, prefix: tuple[str, ...] = ()):
    for name in sorted(group.commands):
        cmd = group.commands[name]
        yield prefix + (name,), cmd
        if isinstance(cmd, click.Group):
            yield from _walk(cmd, prefix + (name,))


def render() -> str:
    runner = CliRunner()
    parts = [HEADER, "## sciprune\n", "```text\n" + runner.invoke(cli, ["--help"], terminal_width=100, prog_name="sciprune").output + "```\n"]
    for path, _ in _walk(cli):
        out = runner.invoke(cli, [*path, "--help"], terminal_width=100, prog_name="sciprune").output
        parts.append(f"## sciprune {' '.join(path)}\n")
        parts.append("```text\n" + out + "```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    target = Path(__file__).with_name("cli.md")
    target.write_text(render())
    print(f"wrote {target}")
