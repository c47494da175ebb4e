"""The ``secateur`` command.

Method options are not a second list: ``secateur prune MODEL --method NAME --OPTION VALUE ...`` accepts
every field of the method class (``secateur methods`` lists them) and parses the values with the same
schema as Python calls and recipes. Every error secateur raises on purpose exits with status 2 and
one line that says what to do; torch is imported only by commands that need it.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from importlib import resources
from pathlib import Path

import typer

from .errors import InvalidParameterError, SecateurError

_USAGE_ERROR = typer.BadParameter.__bases__[0]  # click's UsageError (typer vendors click)


class _OneLineErrors(typer.core.TyperGroup):
    """Usage mistakes click catches itself (an unknown option, a bad value for a typed option, a missing
    argument) end like every other secateur error: one line on stderr and exit status 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import sys

        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _USAGE_ERROR as err:
            if type(err).__name__ == "NoArgsIsHelpError":  # `secateur` alone: the help, as click shows it
                err.show()
            else:
                where = f"{err.ctx.command_path}: " if err.ctx else ""
                typer.echo(f"error: {where}{err.format_message()} (see --help)", err=True)
            code = 2
        except typer.Abort:
            typer.echo("aborted", err=True)
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(help="Prune PyTorch models: smaller and faster, measured.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False, cls=_OneLineErrors)
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


def _run(recipe_path: Path, out: Path | None, quiet: bool, overwrite: bool) -> None:
    from .io import OutputFolder
    from .recipe import LMRecipe, load_recipe
    from .report import print_table, write_report

    _threads()
    recipe = load_recipe(recipe_path)
    with OutputFolder(out or Path("runs") / recipe.name, overwrite) as folder:
        if isinstance(recipe, LMRecipe):
            from .lm_pipeline import lm_markdown, run_lm_recipe

            report = run_lm_recipe(recipe, folder, progress=not quiet)
            folder.write_text("report.json", json.dumps(report, indent=1))
            folder.write_text("report.md", lm_markdown(report))
            typer.echo(lm_markdown(report))
            return
        from .pipeline import run_recipe

        report = run_recipe(recipe, folder, progress=not quiet)
        paths = write_report(report, folder, with_plot=recipe.report.plot)
    print_table(report)
    typer.echo("wrote " + ", ".join(str(p) for p in paths))


OVERWRITE_HELP = ("Write into a folder that holds files secateur did not write, replacing only those with the names "
                  "secateur writes.")


@app.command()
def demo(out: Path = typer.Option(Path("runs/demo"), help="Folder for the report and model files."),
         quiet: bool = typer.Option(False, help="No progress bars."),
         overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """Train a digits CNN, prune it to half its MACs, distil, quantize to int8, export, and measure."""
    _guard(_run, demo_recipe_path(), out, quiet, overwrite)


@app.command()
def run(recipe: Path = typer.Argument(..., help="A YAML recipe, e.g. examples/mlp-unstructured.yaml."),
        out: Path | None = typer.Option(None, help="Output folder (default runs/<recipe name>)."),
        quiet: bool = typer.Option(False, help="No progress bars."),
        overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """Run the pipeline a recipe describes."""
    _guard(_run, recipe, out, quiet, overwrite)


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
        wrap = lambda text, indent: textwrap.fill(text, 80, subsequent_indent=indent)  # noqa: E731
        for key, cls in sorted(chosen.items()):
            typer.echo(wrap(f"{key}: {(cls.__doc__ or '').strip().splitlines()[0]}", "    "))
            for field, hint in hints(cls).items():
                default = cls.__dataclass_fields__[field].default
                shown = "required" if default is dataclasses.MISSING else repr(default)
                typer.echo(wrap(f"  --{field.replace('_', '-'):<12} {describe(hint)} (default {shown})", " " * 17))
        typer.echo(wrap(f"criteria: {', '.join(sorted(CRITERIA))}", "    "))

    _guard(work)


CALIBRATION_HELP = ("A .npz file of calibration data: arrays x (and y, targets) split into batches of 32 in order, or "
                    "input_ids (token ids, one row per sequence) for language models.")


TEXT_HELP = ("Calibration text for hf: language models (a UTF-8 file, or stdlib-docstrings / python-reference), "
             "tokenized with the model folder's tokenizer into --windows.")
WINDOWS_HELP = "Windows of --calibration-text: COUNTxLENGTH tokens."


def calibration_for(model: str, path: Path | None, text: str | None, shape: str):
    """Calibration from ``--calibration FILE.npz`` or ``--calibration-text`` (not both)."""
    if path is not None and text is not None:
        raise InvalidParameterError("give --calibration FILE.npz or --calibration-text TEXT, not both")
    if text is None:
        return load_calibration(path)
    from .calibration import text_windows

    return text_windows(model, text, shape)


def example_from(resolved, calibration):
    """Real token windows as example inputs of a text model (instead of the random ids a config implies)."""
    import torch

    ids = getattr(resolved.example_inputs, "get", lambda _: None)("input_ids")
    if isinstance(calibration, torch.Tensor) and ids is not None and not calibration.is_floating_point():
        return {"input_ids": calibration[:2]}
    return resolved.example_inputs


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
            calibration: Path | None = typer.Option(None, help=CALIBRATION_HELP),
            calibration_text: str | None = typer.Option(None, help=TEXT_HELP),
            windows: str = typer.Option("8x128", help=WINDOWS_HELP)) -> None:
    """Pre-flight report: coupled groups, what would be pruned, and why anything is skipped; with method
    options (e.g. --sparsity 0.3 --units heads), also the plan it would make. Nothing is changed."""

    def work() -> None:
        from .analysis import analyze as run_analysis

        chosen = method_from_cli(method, ctx.args, 0.5) if ctx.args or method != "structured" else None
        batches = calibration_for(model, calibration, calibration_text, windows)
        r = _resolve(model, weights, input_shape)
        typer.echo(run_analysis(r.model, example_from(r, batches), chosen, batches).to_text())

    _guard(work)


@app.command(context_settings=EXTRA)
def prune(ctx: typer.Context, model: str = typer.Argument(..., help=MODEL_HELP),
          out: Path = typer.Option(..., help="Folder for the pruned model (weights + manifest) and prune.json."),
          method: str = typer.Option("structured", help=METHOD_HELP),
          input_shape: str | None = typer.Option(None, help="For py: models, e.g. 1,3,32,32."),
          weights: str | None = typer.Option(None, help="Weights for py: models (.safetensors)."),
          calibration: Path | None = typer.Option(None, help=CALIBRATION_HELP),
          calibration_text: str | None = typer.Option(None, help=TEXT_HELP),
          windows: str = typer.Option("32x512", help=WINDOWS_HELP),
          stream: bool = typer.Option(False, help="One-shot methods on hf:FOLDER: prune block by block from the "
                                      "safetensors files (models larger than memory); --out gets a Hugging Face "
                                      "checkpoint."),
          quiet: bool = typer.Option(False, help="No progress bars."),
          overwrite: bool = typer.Option(False, help=OVERWRITE_HELP),
          hf: bool = typer.Option(False, "--hf", help="Write a Hugging Face checkpoint (transformers models), "
                                  "zero-padding sizes the config cannot express.")) -> None:
    """Prune a model and save it, e.g. `secateur prune zoo:mlp --sparsity 0.5 --out runs/mlp`; reload it
    with `secateur load OUT --base MODEL`. Structured pruning removes half of each group by default."""

    def work() -> None:
        from .io import describe, save, save_pretrained
        from .io.folder import check_target
        from .pruning import prune as run_prune

        chosen = method_from_cli(method, ctx.args, 0.5)
        batches = calibration_for(model, calibration, calibration_text, windows)
        check_target(out.absolute(), set(), overwrite)  # before the work, not after it
        _threads()
        if stream:
            return _prune_streamed(model, chosen, batches, out, quiet)
        r = _resolve(model, weights, input_shape)
        result = run_prune(r.model, chosen, example_inputs=example_from(r, batches), calibration=batches,
                           progress=not quiet)
        record = {"prune.json": json.dumps(result.to_dict(), indent=1).encode()}
        writer = save_pretrained if hf else save
        writer(r.model, out, metadata={"base": model}, overwrite=overwrite, extra_files=record)
        typer.echo(result.summary())
        typer.echo(f"wrote {describe(out)}")

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
        from .io import describe
        from .io import load as run_load

        r = _resolve(base, weights, input_shape)
        typer.echo(describe(folder))
        model = run_load(folder, base=r.factory).eval()
        typer.echo(f"loaded {folder} onto {base}: params {count_params(r.model):,} -> {count_params(model):,}, "
                   f"MACs {count_macs(r.model, r.example_inputs):,} -> {count_macs(model, r.example_inputs):,}")

    _guard(work)


@app.command()
def inspect(folder: Path = typer.Argument(..., help="A folder written by secateur.")) -> None:
    """Verify a saved folder (every file's size and SHA-256, every tensor) and say what it is: a Hugging Face
    checkpoint that from_pretrained loads, or a secateur folder that `secateur load` rebuilds."""

    def work() -> None:
        from .io import describe

        typer.echo(describe(folder))

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
                calibration_text: str | None = typer.Option(None, help=TEXT_HELP),
                windows: str = typer.Option("8x128", help=WINDOWS_HELP),
                quiet: bool = typer.Option(False, help="No progress bars."),
                overwrite: bool = typer.Option(False, help=OVERWRITE_HELP)) -> None:
    """Quality against pruned fraction for each prunable group (or layer), pruned alone (quality: output
    fidelity to the dense model on its example inputs: for hf: language models given --calibration-text,
    real text windows instead of random token ids)."""

    def work() -> None:
        from .allocation import sensitivity as run_sensitivity
        from .io import OutputFolder
        from .schema import coerce

        chosen = method_from_cli(method, ctx.args or (["--sparsity", "0"] if method == "unstructured" else []), 0.0)
        fractions = coerce(levels, tuple[float, ...], text=True)
        batches = calibration_for(model, calibration, calibration_text, windows)
        with OutputFolder(out, overwrite) as folder:
            r = _resolve(model, weights, input_shape)
            if batches is None and model.startswith("hf:") and "input_ids" in getattr(r.example_inputs, "keys", list)():
                typer.echo("note: quality is measured on random token ids; pass --calibration-text TEXT for real "
                           "text", err=True)
            result = run_sensitivity(r.model, chosen, example_inputs=example_from(r, batches), ratios=fractions,
                                     calibration=batches, progress=not quiet)
            folder.write_text("sensitivity.md", result.to_markdown())
            folder.write_text("sensitivity.json", json.dumps(result.to_dict(), indent=1))
            result.plot(folder.path("sensitivity.png"))
        typer.echo(result.to_text())
        typer.echo(f"wrote {out}")

    _guard(work)


@app.command()
def version() -> None:
    """Print secateur's version."""
    from . import __version__

    typer.echo(__version__)
