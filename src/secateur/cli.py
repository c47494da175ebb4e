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
    from .recipe import LMRecipe, load_recipe
    from .report import print_table, write_report

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))
    recipe = load_recipe(recipe_path)
    out = out or Path("runs") / recipe.name
    if isinstance(recipe, LMRecipe):
        import json

        from .lm_pipeline import lm_markdown, run_lm_recipe

        report = run_lm_recipe(recipe, out, progress=not quiet)
        (out / "report.json").write_text(json.dumps(report, indent=1))
        (out / "report.md").write_text(lm_markdown(report))
        typer.echo(lm_markdown(report))
        return
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


def _method(sparsity: float | None, target_macs: float | None, target_params: float | None, units: str | None,
            scope: str, round_to: int, criterion: str):
    from .methods import Params, Structured

    target = target_macs if target_macs is not None else Params(target_params) if target_params is not None else None
    if sparsity is None and target is None:
        sparsity = 0.5
    return Structured(sparsity=sparsity, target=target, units=tuple(units.split(",")) if units else None,
                      scope=scope, round_to=round_to, criterion=criterion)


def _shape(text: str | None) -> tuple[int, ...] | None:
    return tuple(int(v) for v in text.split(",")) if text else None


MODEL_HELP = "zoo:NAME, hf:FOLDER (a local Hugging Face model) or py:package.module:factory"


@app.command()
def analyze(model: str = typer.Argument(..., help=MODEL_HELP),
            units: str | None = typer.Option(None, help="Comma-separated units: channels,heads,hidden,groups."),
            input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
            weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors).")) -> None:
    """Pre-flight report: coupled groups, what would be pruned, and why anything is skipped."""

    def work() -> None:
        from .analyze import analyze as run_analysis
        from .resolve import resolve

        r = resolve(model, weights, _shape(input_shape))
        method = _method(0.5, None, None, units, "layer", 1, "magnitude")
        typer.echo(run_analysis(r.model, r.example_inputs, method).to_markdown())

    _guard(work)


@app.command()
def prune(model: str = typer.Argument(..., help=MODEL_HELP),
          out: Path = typer.Option(..., help="Folder for the pruned model (safetensors + manifest)."),
          sparsity: float | None = typer.Option(None, help="Fraction of each group's units to remove."),
          target_macs: float | None = typer.Option(None, help="Keep this fraction of MACs instead."),
          target_params: float | None = typer.Option(None, help="Keep this fraction of parameters instead."),
          units: str | None = typer.Option(None, help="Comma-separated units: channels,heads,hidden,groups."),
          scope: str = typer.Option("layer", help="layer or global."),
          round_to: int = typer.Option(1, help="Keep unit counts at multiples of this."),
          criterion: str = typer.Option("magnitude", help="Importance criterion."),
          input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
          weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors).")) -> None:
    """Prune a model structurally and save it; reload it with `secateur load OUT --base MODEL`."""

    def work() -> None:
        import json

        from .io import save
        from .prune import prune as run_prune
        from .resolve import resolve

        r = resolve(model, weights, _shape(input_shape))
        method = _method(sparsity, target_macs, target_params, units, scope, round_to, criterion)
        result = run_prune(r.model, method, example_inputs=r.example_inputs)
        save(r.model, out, plan=result.plan, metadata={"base": model})
        (out / "prune.json").write_text(json.dumps(result.to_dict() | {"plan": None}, indent=1))
        typer.echo(result.summary())
        typer.echo(f"wrote {out}")

    _guard(work)


@app.command()
def load(folder: Path = typer.Argument(..., help="A folder written by `secateur prune` or secateur.save."),
         base: str = typer.Option(..., help=f"The original model: {MODEL_HELP}."),
         input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
         weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors).")) -> None:
    """Rebuild a pruned model on its original architecture, run it, and print its size."""

    def work() -> None:
        from .counting import count_macs, count_params
        from .io import load as run_load
        from .resolve import resolve

        r = resolve(base, weights, _shape(input_shape))
        model = run_load(folder, base=r.factory).eval()
        typer.echo(f"loaded {folder} onto {base}: params {count_params(r.model):,} -> {count_params(model):,}, "
                      f"MACs {count_macs(r.model, r.example_inputs):,} -> {count_macs(model, r.example_inputs):,}")

    _guard(work)


@app.command()
def profile(model: str = typer.Argument(..., help=MODEL_HELP),
            input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
            weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors)."),
            runs: int = typer.Option(30, help="Timed runs (median reported).")) -> None:
    """Params, MACs, ONNX bytes and latency (torch, onnxruntime) of a model on its example inputs."""

    def work() -> None:
        from .profile import profile as run_profile
        from .resolve import resolve

        r = resolve(model, weights, _shape(input_shape))
        console.print(run_profile(r.model, r.example_inputs, runs=runs).to_dict())

    _guard(work)


@app.command()
def sensitivity(model: str = typer.Argument(..., help=MODEL_HELP),
                out: Path = typer.Option(Path("runs/sensitivity"), help="Folder for the table, plot and JSON."),
                ratios: str = typer.Option("0.25,0.5,0.75", help="Comma-separated ratios to try per group."),
                units: str | None = typer.Option(None, help="Comma-separated units: channels,heads,hidden,groups."),
                input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
                weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors).")) -> None:
    """Quality against ratio for each prunable group, pruned alone (quality: output fidelity to the dense
    model on its example inputs)."""

    def work() -> None:
        import json

        from .resolve import resolve
        from .sensitivity import sensitivity as run_sensitivity

        r = resolve(model, weights, _shape(input_shape))
        method = _method(0.0, None, None, units, "layer", 1, "magnitude")
        result = run_sensitivity(r.model, method, example_inputs=r.example_inputs,
                                 ratios=tuple(float(v) for v in ratios.split(",")))
        out.mkdir(parents=True, exist_ok=True)
        (out / "sensitivity.md").write_text(result.to_markdown())
        (out / "sensitivity.json").write_text(json.dumps(result.to_dict(), indent=1))
        result.plot(out / "sensitivity.png")
        typer.echo(result.to_markdown())
        typer.echo(f"wrote {out}")

    _guard(work)


@app.command()
def version() -> None:
    """Print secateur's version."""
    from . import __version__

    console.print(__version__)
