"""Run a language-model recipe: one-shot pruning measured by perplexity on held-out text."""

from __future__ import annotations

import copy
import platform
import time
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from . import __version__
from .deps import require
from .errors import PruningError
from .io import OutputFolder, output_folder, save, save_pretrained
from .llm import load_corpus, perplexity, prune_checkpoint, windows
from .methods import Structured
from .pruning import prune
from .recipe import LMFinetuneStep, LMRecipe
from .results import PruneResult
from .tracking import flat, masked_sparsity, prune_metrics, recipe_tracker
from .training import finetune


def _load(spec: str):
    if spec == "llm:smollm2":
        from .zoo.llm import smollm2

        return smollm2()
    transformers = require("transformers", "Hugging Face language models")
    AutoModelForCausalLM, AutoTokenizer = transformers.AutoModelForCausalLM, transformers.AutoTokenizer  # noqa: N806

    folder = spec.removeprefix("hf:")
    return (AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(folder, local_files_only=True))


def _sample(model, tokenizer, prompt: str) -> str:
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=32, do_sample=False)
    return tokenizer.decode(out[0][ids.shape[1]:], skip_special_tokens=True)


def _prune(model: nn.Module, method: object, calibration: torch.Tensor, progress: bool) -> tuple[PruneResult, dict]:
    """Prune; structured methods trace one window and stream the windows one at a time. The result and the
    report's figures."""
    if isinstance(method, Structured):
        result = prune(model, method, example_inputs=calibration[:1], calibration=[w[None] for w in calibration],
                       progress=progress)
        figures = {"seconds": result.seconds, "params": result.params_after, "params_before": result.params_before,
                   "blocks_removed": result.plan.blocks}
    else:
        result = prune(model, method, calibration=calibration, progress=progress)
        figures = {"seconds": result.seconds, "sparsity_per_layer": result.plan.sparsity(),
                   "sparsity_per_block": result.profile}
    if result.plan.is_empty():
        raise PruningError(f"the prune step {method.to_dict()} removed nothing; raise its sparsity")
    return result, figures


def _speed(dense: nn.Module, model: nn.Module, ids: torch.Tensor, recipe: LMRecipe) -> dict:
    from .lm_speed import generation_speed

    spec = recipe.speed
    prompt = ids[: spec.prompt][None]
    fast = generation_speed({"dense": dense, "pruned": model}, prompt, spec.new_tokens, spec.repeats)
    return {"prefill tok/s": {k: round(v.prefill, 1) for k, v in fast.items()},
            "decode tok/s": {k: round(v.decode, 2) for k, v in fast.items()},
            "prefill speedup": round(fast["pruned"].prefill / fast["dense"].prefill, 3),
            "decode speedup": round(fast["pruned"].decode / fast["dense"].decode, 3)}


def recover(model, teacher, train_ids: torch.Tensor, step: LMFinetuneStep, out: OutputFolder, tracker,
            progress: bool) -> dict:
    """A recipe's fine-tuning step on windows of the calibration text's first half; figures for the report."""
    start = time.process_time()
    result = finetune(model, windows(train_ids, step.length, train_ids.numel() // step.length), steps=step.steps,
                      minutes=step.minutes, batch_size=step.batch_size, accumulate=step.accumulate, lr=step.lr,
                      teacher=teacher if step.distill else None, temperature=step.temperature, alpha=step.alpha,
                      hidden_weight=step.hidden_weight, max_grad_norm=step.max_grad_norm,
                      checkpoint_dir=out.directory("checkpoint"), checkpoint_every=step.checkpoint_every, log=tracker,
                      progress=progress)
    return {"steps": result.steps, "tokens": result.tokens, "seconds": result.seconds,
            "sparsity": masked_sparsity(model),
            "cpu_seconds": time.process_time() - start, "tokens_per_s": result.tokens / max(result.seconds, 1e-9)}


def run_lm_recipe(recipe: LMRecipe, out: str | Path | OutputFolder, progress: bool = True) -> dict:
    """Prune (and recover) as the recipe says; perplexity on every evaluation text before and after each step.
    Files go under ``out`` (a folder path, or an open :class:`~secateur.io.OutputFolder`)."""
    with output_folder(out) as folder:
        return _report(recipe, (_run_streamed if recipe.stream else _run)(recipe, folder, progress))


class Texts(NamedTuple):
    """A recipe's token ids: the first half of ``data`` (training text), the second (held out), calibration
    windows from the first half, and evaluation windows per text (``data``'s from its second half)."""

    train: torch.Tensor
    held_out: torch.Tensor
    calibration: torch.Tensor
    evals: dict[str, torch.Tensor]


def _texts(recipe: LMRecipe, tokenizer) -> Texts:
    ids = {name: tokenizer(load_corpus(name), return_tensors="pt").input_ids[0]
           for name in dict.fromkeys([recipe.data, *recipe.evaluate_on])}
    half = ids[recipe.data].numel() // 2  # calibration from the first half, evaluation from the second
    calibration = windows(ids[recipe.data][:half], recipe.calibration.length, recipe.calibration.windows)
    evals = {name: windows(t[half:] if name == recipe.data else t, recipe.evaluation.length,
                           recipe.evaluation.windows) for name, t in ids.items() if name in recipe.evaluate_on}
    return Texts(ids[recipe.data][:half], ids[recipe.data][half:], calibration, evals)


def _run(recipe: LMRecipe, out: OutputFolder, progress: bool) -> list[dict]:
    tracker = recipe_tracker(recipe.log, out)
    model, tokenizer = _load(recipe.model)
    texts = _texts(recipe, tokenizer)

    def measure(name: str, extra: dict) -> None:
        stages.append({"name": name, "metrics": {**{f"perplexity[{k}]": perplexity(model, v, progress=progress)
                                                    for k, v in texts.evals.items()},
                                                 "sample": _sample(model, tokenizer, recipe.prompt), **extra}})
        tracker.log(flat({f"stage/{k}": v for k, v in stages[-1]["metrics"].items()}), len(stages) - 1)

    stages: list[dict] = []
    measure("dense", {})
    dense = copy.deepcopy(model).eval() if recipe.speed or any(s.kind == "finetune" and s.finetune.distill
                                                               for s in recipe.steps) else None
    for step in recipe.steps:
        if step.kind == "prune":
            result, figures = _prune(model, step.prune.method, texts.calibration, progress)
            tracker.log({f"prune/{k}": v for k, v in prune_metrics(result).items()}, len(stages))
            measure("pruned", figures)
            if recipe.speed:
                stages[-1]["metrics"].update(_speed(dense, model, texts.held_out, recipe))
        elif step.kind == "finetune":
            measure("finetuned", recover(model, dense, texts.train, step.finetune, out, tracker, progress))
        else:
            _export(model, step.export.formats, texts.calibration, out)
    return stages


def _export(model: nn.Module, formats: list[str], calibration: torch.Tensor, out: OutputFolder) -> None:
    if "safetensors" in formats:
        save(model, out.path("model"))
    if "hf" in formats:
        save_pretrained(model, out.path("hf"))
    if "onnx" in formats:
        from .onnx_export import export_onnx

        export_onnx(model, out.path("model.onnx"), {"input_ids": calibration[:1, :64]})


def _run_streamed(recipe: LMRecipe, out: OutputFolder, progress: bool) -> list[dict]:
    """Prune from the checkpoint's files block by block; each evaluation loads one model, then lets it go."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = recipe.model.removeprefix("hf:")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    texts = _texts(recipe, tokenizer)

    def measure(name: str, path: str | Path, extra: dict) -> dict:
        metrics = dict(extra)
        if texts.evals:
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
            metrics |= {f"perplexity[{k}]": perplexity(model, v, progress=progress) for k, v in texts.evals.items()}
            metrics["sample"] = _sample(model, tokenizer, recipe.prompt)
        return {"name": name, "metrics": metrics}

    stages = [measure("dense", folder, {})]
    for step in (s for s in recipe.steps if s.kind == "prune"):
        target = out.path("model/")  # a new folder prune_checkpoint fills; the next run deletes it whole
        result = prune_checkpoint(folder, target, step.prune.method, texts.calibration, progress=progress)
        stages.append(measure("pruned", target, {"seconds": result.seconds, "sparsity_per_layer": result.sparsity,
                                                 "sparsity_per_block": result.profile}))
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
        if "params" in s["metrics"]:
            m = s["metrics"]
            lines.append(f"pruned in {m['seconds']:.1f} s; params {m['params_before']:,} -> {m['params']:,}"
                         + (f"; blocks removed: {', '.join(m['blocks_removed'])}" if m["blocks_removed"] else ""))
        if "decode speedup" in s["metrics"]:
            m = s["metrics"]
            lines.append(f"tokens/s dense -> pruned: prefill {m['prefill tok/s']['dense']} -> "
                         f"{m['prefill tok/s']['pruned']} ({m['prefill speedup']}x), decode "
                         f"{m['decode tok/s']['dense']} -> {m['decode tok/s']['pruned']} ({m['decode speedup']}x)")
        if "sparsity_per_layer" in s["metrics"]:
            values = list(s["metrics"]["sparsity_per_layer"].values())
            blocks = list(s["metrics"].get("sparsity_per_block", {}).values()) or values
            lines.append(f"pruned in {s['metrics']['seconds']:.1f} s; sparsity per layer {min(values):.3f} to "
                         f"{max(values):.3f} over {len(values)} layers; asked per block {min(blocks):.3f} to "
                         f"{max(blocks):.3f}")
        if "tokens" in s["metrics"]:
            m = s["metrics"]
            lines.append(f"fine-tuned {m['steps']} steps on {m['tokens']:,} tokens in {m['seconds'] / 60:.1f} min "
                         f"({m['tokens_per_s']:.0f} tokens/s, {m['cpu_seconds'] / 60:.1f} CPU min)")
    lines += ["", *(f"- **{k}**: {v}" for k, v in report["notes"].items())]
    return "\n".join(lines) + "\n"
