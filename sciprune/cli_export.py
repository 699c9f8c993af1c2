"""``sciprune export``: a saved surrogate as an ONNX graph in physical units, for simulation codes."""

from __future__ import annotations

from pathlib import Path

import click

from ._cli_base import PathArg, UserError

__all__ = ["export"]


@click.command("export")
@click.argument("model_path", type=PathArg())
# --format and --opset are checked by the library, so a wrong value is one line like every user error.
@click.option("--format", "fmt", default="onnx", show_default=True, help="Output format (only onnx).")
@click.option("--output", default=None, type=PathArg(),
              help="File to write (default: MODEL's name with .onnx, beside it).")
@click.option("--compact/--no-compact", default=True, show_default=True,
              help="Remove dead hidden neurons first (smaller weight matrices, same outputs).")
@click.option("--opset", default=18, show_default=True, type=int, help="ONNX opset (18 or newer).")
@click.option("--force", is_flag=True, help="Replace an existing output file.")
def export(model_path, fmt, output, compact, opset, force) -> None:
    """Write a saved surrogate as an ONNX graph with its input and output scaling inside, so that a C,
    C++ or Fortran code calls it through ONNX Runtime on float64 (batch, F_in) arrays in physical units.

    The graph is checked with onnx.checker and run under ONNX Runtime against sciprune.load(MODEL)
    before it is written (atomically). Needs the extra: pip install 'sciprune[export]'.
    """
    from .export import export_onnx

    out = Path(output) if output is not None else _default_output(model_path)
    report = export_onnx(model_path, out, compact=compact, opset=opset, force=force, fmt=fmt)
    click.echo(report.describe_compaction())
    click.echo(f"checked under ONNX Runtime against sciprune.load on {report.check_points} points: largest "
               f"difference {report.max_rel_diff:.2g} of the largest output")
    click.echo(f"wrote {report.path} (opset {report.opset})")


def _default_output(model_path: str) -> Path:
    """``<dir>/model.sciprune`` (or its ``model.json``) -> ``<dir>/model.onnx``."""
    p = Path(model_path).absolute()
    if p.name == "model.json":
        p = p.parent
    if not p.name:
        raise UserError(f"cannot name an output file after {model_path!r}; pass --output FILE.onnx")
    return p.with_suffix(".onnx")
