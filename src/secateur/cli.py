"""The ``secateur`` command.

Method options are not a second list: ``secateur prune MODEL --method NAME --OPTION VALUE ...`` accepts
every field of the method class (``secateur methods`` lists them) and parses the values with the same
schema as Python calls and recipes. Every error secateur raises on purpose exits with status 2 and
one line that says what to do; torch is imported only by commands that need it.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path

import typer

from .errors import InvalidParameterError, SecateurError

app = typer.Typer(help="Prune PyTorch models: smaller and faster, measured.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
EXTRA = {"allow_extra_args": True, "ignore_unknown_options": True}
MODEL_HELP = "zoo:NAME, hf:FOLDER (a local Hugging Face model) or py:package.module:factory"
METHOD_HELP = "Method name (see `secateur methods`); its options follow as --OPTION VALUE."


def demo_recipe_path() -> Path:
    """The embedded default recipe that ``secateur demo`` runs."""
    return Path(str(resources.files("secateur") / "recipes" / "demo.yaml"))


def _guard(fn, *args) -> None:
    """Run a command body; a secateur error becomes one line on stderr and exit status 2."""
    try:
        fn(*args)
    except SecateurError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None


def option_pairs(tokens: list[str]) -> dict[str, str]:
    """``["--round-to", "8", "--units=heads,channels"]`` -> ``{"round_to": "8", "units": "heads,channels"}``.

    >>> option_pairs(["--round-to", "8", "--units=heads"])
    {'round_to': '8', 'units': 'heads'}
    """
    options, i = {}, 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or token == "--":
            raise InvalidParameterError(f"unexpected argument {token!r}; method options are written --OPTION VALUE")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise InvalidParameterError(f"option --{key} needs a value, e.g. --{key} 0.5")
            value, i = tokens[i + 1], i + 1
        options[key.replace("-", "_")] = value
        i += 1
    return options


def method_from_cli(name: str, tokens: list[str], default_sparsity: float | None = None):
    """The method a command line describes, through the same schema as Python and recipes."""
    from .methods import Method

    options = option_pairs(tokens)
    if name == "structured" and default_sparsity is not None and not {"sparsity", "target", "ratios"} & set(options):
        options["sparsity"] = str(default_sparsity)
    return Method.from_dict({"method": name, **options}, text=True, where=f"--method {name}")


def _shape(text: str | None):
    from .resolve import parse_shape

    return parse_shape(text)


def _threads() -> None:
    import os

    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), os.cpu_count() or 1)))


def _run(recipe_path: Path, out: Path | None, quiet: bool) -> None:
    from .recipe import LMRecipe, load_recipe
    from .report import print_table, write_report

    _threads()
    recipe = load_recipe(recipe_path)
    out = out or Path("runs") / recipe.name
    if isinstance(recipe, LMRecipe):
        from .lm_pipeline import lm_markdown, run_lm_recipe

        report = run_lm_recipe(recipe, out, progress=not quiet)
        (out / "report.json").write_text(json.dumps(report, indent=1))
        (out / "report.md").write_text(lm_markdown(report))
        typer.echo(lm_markdown(report))
        return
    from .pipeline import run_recipe

    report = run_recipe(recipe, out, progress=not quiet)
    paths = write_report(report, out, with_plot=recipe.report.plot)
    print_table(report)
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


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
def methods(name: str | None = typer.Argument(None, help="One method to describe.")) -> None:
    """List the pruning methods with every option (and its default), and the criteria."""

    def work() -> None:
        from .criteria import CRITERIA
        from .methods import METHODS
        from .schema import describe, hints

        chosen = {name: METHODS[name]} if name in METHODS else METHODS
        if name is not None and name not in METHODS:
            raise InvalidParameterError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
        for key, cls in sorted(chosen.items()):
            typer.echo(f"{key}: {(cls.__doc__ or '').strip().splitlines()[0]}")
            for field, hint in hints(cls).items():
                default = cls.__dataclass_fields__[field].default
                shown = "required" if default is dataclasses.MISSING else repr(default)
                typer.echo(f"  --{field.replace('_', '-'):<12} {describe(hint)} (default {shown})")
        typer.echo(f"criteria: {', '.join(sorted(CRITERIA))}")

    _guard(work)


CALIBRATION_HELP = ("A .npz file of calibration data: arrays x (and y, targets) split into batches of 32 in order, or "
                    "input_ids (token ids, one row per sequence) for language models.")


def load_calibration(path: Path | None, batch_size: int = 32):
    """Calibration batches from a ``.npz`` file (read without pickle)."""
    if path is None:
        return None
    import numpy as np
    import torch

    from .errors import ModelFileError

    try:
        with np.load(path, allow_pickle=False) as raw:
            arrays = {k: torch.as_tensor(raw[k]) for k in raw.files}
    except (OSError, ValueError) as err:
        raise ModelFileError(f"{path} is not a readable .npz file ({err})") from None
    if "input_ids" in arrays:
        return arrays["input_ids"].long()
    if "x" not in arrays:
        raise ModelFileError(f"{path} holds {sorted(arrays)}; calibration needs x (and y) or input_ids")
    x, y = arrays["x"].float(), arrays.get("y")
    starts = range(0, len(x), batch_size)
    return [(x[i : i + batch_size], y[i : i + batch_size].long()) if y is not None else x[i : i + batch_size]
            for i in starts]


def _resolve(model: str, weights: str | None, input_shape: str | None):
    from .resolve import resolve

    return resolve(model, weights, _shape(input_shape))


@app.command(context_settings=EXTRA)
def analyze(ctx: typer.Context, model: str = typer.Argument(..., help=MODEL_HELP),
            method: str = typer.Option("structured", help=METHOD_HELP),
            input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
            weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors)."),
            calibration: Path | None = typer.Option(None, help=CALIBRATION_HELP)) -> None:
    """Pre-flight report: coupled groups, what would be pruned, and why anything is skipped; with method
    options (e.g. --sparsity 0.3 --units heads), also the plan it would make. Nothing is changed."""

    def work() -> None:
        from .analysis import analyze as run_analysis

        chosen = method_from_cli(method, ctx.args, 0.5) if ctx.args or method != "structured" else None
        batches = load_calibration(calibration)
        r = _resolve(model, weights, input_shape)
        typer.echo(run_analysis(r.model, r.example_inputs, chosen, batches).to_markdown())

    _guard(work)


@app.command(context_settings=EXTRA)
def prune(ctx: typer.Context, model: str = typer.Argument(..., help=MODEL_HELP),
          out: Path = typer.Option(..., help="Folder for the pruned model (weights + manifest) and prune.json."),
          method: str = typer.Option("structured", help=METHOD_HELP),
          input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
          weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors)."),
          calibration: Path | None = typer.Option(None, help=CALIBRATION_HELP),
          stream: bool = typer.Option(False, help="One-shot methods on hf:FOLDER: prune block by block from the "
                                      "safetensors files (models larger than memory); --out gets a Hugging Face "
                                      "checkpoint."),
          quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Prune a model and save it, e.g. `secateur prune zoo:mlp --sparsity 0.5 --out runs/mlp`; reload it
    with `secateur load OUT --base MODEL`. Structured pruning removes half of each group by default."""

    def work() -> None:
        from .io import save
        from .pruning import prune as run_prune

        chosen = method_from_cli(method, ctx.args, 0.5)
        batches = load_calibration(calibration)
        _threads()
        if stream:
            return _prune_streamed(model, chosen, batches, out, quiet)
        r = _resolve(model, weights, input_shape)
        result = run_prune(r.model, chosen, example_inputs=r.example_inputs, calibration=batches,
                           progress=not quiet)
        save(r.model, out, metadata={"base": model})
        (out / "prune.json").write_text(json.dumps(result.to_dict(), indent=1))
        typer.echo(result.summary())
        typer.echo(f"wrote {out}")

    _guard(work)


def _prune_streamed(model: str, method, calibration, out: Path, quiet: bool) -> None:
    from .llm.shards import prune_checkpoint

    if not model.startswith("hf:"):
        raise InvalidParameterError(f"--stream prunes the safetensors files of an hf:FOLDER model, not {model!r}")
    result = prune_checkpoint(model.removeprefix("hf:"), out, method, calibration, progress=not quiet)
    values = list(result.sparsity.values())
    typer.echo(f"{method.name}: {len(values)} layers pruned to sparsity {min(values):.3f}-{max(values):.3f} in "
               f"{result.seconds:.1f} s ({result.seconds / max(len(result.block_seconds), 1):.1f} s per block)")
    typer.echo(f"wrote {out}")


@app.command()
def load(folder: Path = typer.Argument(..., help="A folder written by `secateur prune` or secateur.save."),
         base: str = typer.Option(..., help=f"The original model: {MODEL_HELP}."),
         input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
         weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors).")) -> None:
    """Rebuild a pruned model on its original architecture, run it, and print its size."""

    def work() -> None:
        from .counting import count_macs, count_params
        from .io import load as run_load

        r = _resolve(base, weights, input_shape)
        model = run_load(folder, base=r.factory).eval()
        typer.echo(f"loaded {folder} onto {base}: params {count_params(r.model):,} -> {count_params(model):,}, "
                   f"MACs {count_macs(r.model, r.example_inputs):,} -> {count_macs(model, r.example_inputs):,}")

    _guard(work)


@app.command()
def profile(model: str = typer.Argument(..., help=MODEL_HELP),
            input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
            weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors)."),
            runs: int = typer.Option(30, min=1, help="Timed runs (median reported).")) -> None:
    """Params, MACs, ONNX bytes and latency (torch, onnxruntime) of a model on its example inputs."""

    def work() -> None:
        from .profiling import profile as run_profile

        r = _resolve(model, weights, input_shape)
        typer.echo(json.dumps(run_profile(r.model, r.example_inputs, runs=runs).to_dict(), indent=1))

    _guard(work)


@app.command(context_settings=EXTRA)
def sensitivity(ctx: typer.Context, model: str = typer.Argument(..., help=MODEL_HELP),
                out: Path = typer.Option(Path("runs/sensitivity"), help="Folder for the table, plot and JSON."),
                levels: str = typer.Option("0.25,0.5,0.75", help="Comma-separated fractions to try per group."),
                method: str = typer.Option("structured", help="structured or unstructured; options follow."),
                input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
                weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors)."),
                calibration: Path | None = typer.Option(None, help=CALIBRATION_HELP),
                quiet: bool = typer.Option(False, help="No progress bars.")) -> None:
    """Quality against pruned fraction for each prunable group (or layer), pruned alone (quality: output
    fidelity to the dense model on its example inputs)."""

    def work() -> None:
        from .allocation import sensitivity as run_sensitivity
        from .schema import coerce

        chosen = method_from_cli(method, ctx.args or (["--sparsity", "0"] if method == "unstructured" else []), 0.0)
        fractions = coerce(levels, tuple[float, ...], text=True)
        r = _resolve(model, weights, input_shape)
        result = run_sensitivity(r.model, chosen, example_inputs=r.example_inputs, ratios=fractions,
                                 calibration=load_calibration(calibration), progress=not quiet)
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

    typer.echo(__version__)
