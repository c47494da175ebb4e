"""The ``secateur`` command."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

import typer
from rich.console import Console

from .errors import SecateurError

app = typer.Typer(help="Prune PyTorch models: smaller and faster, measured.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
console = Console()


def demo_recipe_path() -> Path:
    """The embedded default recipe that ``secateur demo`` runs."""
    return Path(str(resources.files("secateur") / "recipes" / "demo.yaml"))


def _run(recipe_path: Path, out: Path | None, quiet: bool) -> None:
    import torch

    from .pipeline import run_recipe
    from .recipe import load_recipe
    from .report import print_table, write_report

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    recipe = load_recipe(recipe_path)
    out = out or Path("runs") / recipe.name
    report = run_recipe(recipe, out, progress=not quiet)
    paths = write_report(report, out, with_plot=recipe.report.plot)
    print_table(report, console)
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _guard(fn, *args) -> None:
    try:
        fn(*args)
    except SecateurError as err:
        console.print(f"[red]error:[/red] {err}")
        raise typer.Exit(2) from None


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="Folder for the report and model files."),
         quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Train a digits CNN, prune it to half its MACs, distil, quantize to int8, export, and measure."""
    _guard(_run, demo_recipe_path(), out, quiet)


@app.command()
def run(recipe: Path = typer.Argument(..., help="A YAML recipe, e.g. examples/mlp-unstructured.yaml."),
        out: Path | None = typer.Option(None, help="Output folder (default runs/<recipe name>)."),
        quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Run the pipeline a recipe describes."""
    _guard(_run, recipe, out, quiet)


@app.command()
def version() -> None:
    """Print secateur's version."""
    from . import __version__

    console.print(__version__)
