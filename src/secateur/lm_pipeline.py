"""Run a language-model recipe: one-shot pruning measured by perplexity on held-out text."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from . import __version__
from .io import save
from .llm import load_corpus, perplexity, prune_checkpoint, windows
from .pruning import prune
from .recipe import LMRecipe


def _load(spec: str):
    if spec == "llm:smollm2":
        from .zoo.llm import smollm2

        return smollm2()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = spec.removeprefix("hf:")
    return (AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


def _sample(model, tokenizer, prompt: str) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=32, do_sample=False)
    return tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True)


def _texts(recipe: LMRecipe, tokenizer) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Calibration windows (first half of ``data``) and evaluation windows per text (the second half of ``data``)."""
    ids = {name: tokenizer(load_corpus(name), return_tensors="pt").input_ids[0]
           for name in dict.fromkeys([recipe.data, *recipe.evaluate_on])}
    half = ids[recipe.data].numel() // 2  # calibration from the first half, evaluation from the second
    calibration = windows(ids[recipe.data][:half], recipe.calibration.length, recipe.calibration.windows)
    evals = {name: windows(t[half:] if name == recipe.data else t, recipe.evaluation.length,
                           recipe.evaluation.windows) for name, t in ids.items() if name in recipe.evaluate_on}
    return calibration, evals


def run_lm_recipe(recipe: LMRecipe, out: str | Path, progress: bool = True) -> dict:
    """Prune as the recipe says; perplexity on every evaluation text before and after."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if recipe.stream:
        return _report(recipe, _run_streamed(recipe, out, progress))
    model, tokenizer = _load(recipe.model)
    calibration, evals = _texts(recipe, tokenizer)

    def measure(name: str, extra: dict) -> None:
        stages.append({"name": name, "metrics": {**{f"perplexity[{k}]": perplexity(model, v, progress=progress)
                                                    for k, v in evals.items()},
                                                 "sample": _sample(model, tokenizer, recipe.prompt), **extra}})

    stages: list[dict] = []
    measure("dense", {})
    for step in recipe.steps:
        if step.kind == "prune":
            result = prune(model, step.prune.method, calibration=calibration, progress=progress)
            measure("pruned", {"seconds": result.seconds, "sparsity_per_layer": result.plan.sparsity(),
                               "sparsity_per_block": result.profile})
        elif "safetensors" in step.export.formats:
            save(model, out / "model")
    return _report(recipe, stages)


def _run_streamed(recipe: LMRecipe, out: Path, progress: bool) -> list[dict]:
    """Prune from the checkpoint's files block by block; each evaluation loads one model, then lets it go."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = recipe.model.removeprefix("hf:")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    calibration, evals = _texts(recipe, tokenizer)

    def measure(name: str, path: str | Path, extra: dict) -> dict:
        metrics = dict(extra)
        if evals:
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
            metrics |= {f"perplexity[{k}]": perplexity(model, v, progress=progress) for k, v in evals.items()}
            metrics["sample"] = _sample(model, tokenizer, recipe.prompt)
        return {"name": name, "metrics": metrics}

    stages = [measure("dense", folder, {})]
    for step in (s for s in recipe.steps if s.kind == "prune"):
        result = prune_checkpoint(folder, out / "model", step.prune.method, calibration, progress=progress)
        stages.append(measure("pruned", out / "model", {"seconds": result.seconds, "sparsity_per_layer":
                                                        result.sparsity, "sparsity_per_block": result.profile}))
    return stages


def _report(recipe: LMRecipe, stages: list[dict]) -> dict:
    return {"secateur_version": __version__, "recipe": recipe.model_dump(), "stages": stages,
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "python": platform.python_version()},
            "notes": {"calibration": f"{recipe.calibration.windows} x {recipe.calibration.length} tokens, first half "
                      f"of {recipe.data}", "evaluation": f"{recipe.evaluation.windows} x {recipe.evaluation.length} "
                      "tokens; the calibration text's windows come from its second half"}}


def lm_markdown(report: dict) -> str:
    """The language-model report as Markdown."""
    keys = [k for k in report["stages"][0]["metrics"] if k.startswith("perplexity")] or ["seconds"]
    lines = [f"# secateur report: {report['recipe']['name']}", "", "| stage | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    for s in report["stages"]:
        lines.append(f"| {s['name']} | " + " | ".join(f"{s['metrics'].get(k, float('nan')):.2f}" for k in keys) + " |")
    for s in report["stages"]:
        if "sample" in s["metrics"]:
            lines += ["", f"**{s['name']}** sample: `{s['metrics']['sample'][:120]!r}`"]
        if "sparsity_per_layer" in s["metrics"]:
            values = list(s["metrics"]["sparsity_per_layer"].values())
            blocks = list(s["metrics"].get("sparsity_per_block", {}).values()) or values
            lines.append(f"pruned in {s['metrics']['seconds']:.1f} s; sparsity per layer {min(values):.3f} to "
                         f"{max(values):.3f} over {len(values)} layers; asked per block {min(blocks):.3f} to "
                         f"{max(blocks):.3f}")
    lines += ["", *(f"- **{k}**: {v}" for k, v in report["notes"].items())]
    return "\n".join(lines) + "\n"
