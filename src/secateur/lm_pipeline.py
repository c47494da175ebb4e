"""Run a language-model recipe: one-shot pruning measured by perplexity on held-out text."""

from __future__ import annotations

import copy
import platform
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .io import save
from .llm import load_corpus, perplexity, windows
from .methods import Structured
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


class _Logits(nn.Module):
    """A causal LM as ``input_ids -> logits`` (what ONNX export traces)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits


def _prune(model: nn.Module, method: object, calibration: torch.Tensor, progress: bool) -> dict:
    """Prune; structured methods trace one window and stream the windows one at a time."""
    if isinstance(method, Structured):
        result = prune(model, method, example_inputs=calibration[:1], calibration=[w[None] for w in calibration],
                       progress=progress)
        return {"seconds": result.seconds, "params": result.params_after, "params_before": result.params_before,
                "blocks_removed": result.plan.blocks}
    result = prune(model, method, calibration=calibration, progress=progress)
    return {"seconds": result.seconds, "sparsity_per_layer": result.plan.sparsity()}


def _speed(dense: nn.Module, model: nn.Module, ids: torch.Tensor, recipe: LMRecipe) -> dict:
    from .lm_speed import generation_speed

    spec = recipe.speed
    prompt = ids[: spec.prompt][None]
    fast = generation_speed({"dense": dense, "pruned": model}, prompt, spec.new_tokens, spec.repeats)
    return {"prefill tok/s": {k: round(v.prefill, 1) for k, v in fast.items()},
            "decode tok/s": {k: round(v.decode, 2) for k, v in fast.items()},
            "prefill speedup": round(fast["pruned"].prefill / fast["dense"].prefill, 3),
            "decode speedup": round(fast["pruned"].decode / fast["dense"].decode, 3)}


def run_lm_recipe(recipe: LMRecipe, out: str | Path, progress: bool = True) -> dict:
    """Prune as the recipe says; perplexity on every evaluation text before and after."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model, tokenizer = _load(recipe.model)
    ids = {name: tokenizer(load_corpus(name), return_tensors="pt").input_ids[0]
           for name in dict.fromkeys([recipe.data, *recipe.evaluate_on])}
    half = ids[recipe.data].numel() // 2  # calibration from the first half, evaluation from the second
    calibration = windows(ids[recipe.data][:half], recipe.calibration.length, recipe.calibration.windows)
    evals = {name: windows(t[half:] if name == recipe.data else t, recipe.evaluation.length,
                           recipe.evaluation.windows) for name, t in ids.items() if name in recipe.evaluate_on}

    def measure(name: str, extra: dict) -> None:
        stages.append({"name": name, "metrics": {**{f"perplexity[{k}]": perplexity(model, v, progress=progress)
                                                    for k, v in evals.items()},
                                                 "sample": _sample(model, tokenizer, recipe.prompt), **extra}})

    stages: list[dict] = []
    measure("dense", {})
    dense = copy.deepcopy(model) if recipe.speed else None
    for step in recipe.steps:
        if step.kind == "prune":
            measure("pruned", _prune(model, step.prune.method, calibration, progress))
            if dense is not None:
                stages[-1]["metrics"].update(_speed(dense, model, ids[recipe.data][half:], recipe))
            continue
        if "safetensors" in step.export.formats:
            save(model, out / "model")
        if "onnx" in step.export.formats:
            from .onnx_export import export_onnx

            export_onnx(_Logits(model).eval(), out / "model.onnx", calibration[:1, :64])
    return {"secateur_version": __version__, "recipe": recipe.model_dump(), "stages": stages,
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "python": platform.python_version()},
            "notes": {"calibration": f"{recipe.calibration.windows} x {recipe.calibration.length} tokens, first half "
                      f"of {recipe.data}", "evaluation": f"{recipe.evaluation.windows} x {recipe.evaluation.length} "
                      "tokens; the calibration text's windows come from its second half"}}


def lm_markdown(report: dict) -> str:
    """The language-model report as Markdown."""
    keys = [k for k in report["stages"][0]["metrics"] if k.startswith("perplexity")]
    lines = [f"# secateur report: {report['recipe']['name']}", "", "| stage | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    for s in report["stages"]:
        lines.append(f"| {s['name']} | " + " | ".join(f"{s['metrics'][k]:.2f}" for k in keys) + " |")
    for s in report["stages"]:
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
            lines.append(f"pruned in {s['metrics']['seconds']:.1f} s; sparsity per layer {min(values):.3f} to "
                         f"{max(values):.3f} over {len(values)} layers")
    lines += ["", *(f"- **{k}**: {v}" for k, v in report["notes"].items())]
    return "\n".join(lines) + "\n"
