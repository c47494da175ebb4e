"""Run a recipe: train the dense model, then prune / fine-tune / quantize / export, measuring each stage."""

from __future__ import annotations

import copy
import platform
import warnings
from pathlib import Path

import torch
from torch import nn

from . import __version__
from .allocation import sensitivity
from .counting import count_macs, count_nonzero_params, count_params
from .errors import PruningError, RecipeError
from .evaluate import accuracy
from .explain import input_importance, kept_fractions
from .io import OutputFolder, output_folder, save, save_pretrained
from .latency import ort_latency, torch_latency
from .methods import Structured
from .onnx_export import OnnxModel, export_onnx
from .pruning import prune
from .quant import quantize
from .recipe import FinetuneStep, PruneStep, QuantizeStep, Recipe, SensitivityStep
from .results import PruneResult
from .tracking import flat, prune_metrics, recipe_tracker
from .training import finetune
from .zoo import Dataset, load_dataset

STAGE_NAMES = {"prune": "pruned", "finetune": "finetuned", "quantize": "quantized"}


class Run:
    """One recipe run: the model, its data, the measured stages, and where files go."""

    def __init__(self, recipe: Recipe, out: OutputFolder, progress: bool = True) -> None:
        self.recipe, self.out, self.progress = recipe, out, progress
        torch.manual_seed(recipe.seed)
        self.data: Dataset = load_dataset(recipe.data, recipe.seed)
        self.model: nn.Module = _model_for(recipe, self.data)
        self.teacher: nn.Module | None = None
        self.stages: list[dict] = []
        self.tracker = recipe_tracker(recipe.log, out)
        self.prune_result: PruneResult | None = None
        self.importance_before: torch.Tensor | None = None
        self.sensitivity: dict | None = None
        batch = recipe.report.batch_size
        x = self.data.test.x
        self.bench_inputs = (x.repeat(-(-batch // len(x)), *[1] * (x.dim() - 1))[:batch].contiguous(),)

    def _logged(self) -> None:
        """The last stage's figures to the trackers, at the stage's index."""
        self.tracker.log(flat({f"stage/{k}": v for k, v in self.stages[-1]["metrics"].items()}), len(self.stages) - 1)

    def _onnx_path(self, stage: str) -> Path:
        return self.out.path(f"stages/{stage}.onnx")

    def measure(self, stage: str) -> None:
        """Accuracy, params, MACs per sample, ONNX bytes and both latencies of the current model."""
        onnx_model = OnnxModel(export_onnx(self.model, self._onnx_path(stage), self.data.example))
        self.stages.append({"name": stage, "metrics": {
            "accuracy": accuracy(self.model, self.data.test.x, self.data.test.y),
            "params": count_params(self.model), "nonzero_params": count_nonzero_params(self.model),
            "macs": count_macs(self.model, (self.data.example,)), "file_bytes": onnx_model.file_bytes,
            **self._latencies(self.model, onnx_model)}})
        self._logged()

    def _latencies(self, module: nn.Module, onnx_model: OnnxModel) -> dict:
        """Median and interquartile range in torch and onnxruntime, on the report's batch."""
        runs = self.recipe.report.runs
        times = {"torch": torch_latency(module, self.bench_inputs, runs),
                 "onnxruntime": ort_latency(onnx_model, self.bench_inputs, runs)}
        return {"latency_ms": {k: t.median for k, t in times.items()},
                "latency_iqr_ms": {k: [t.p25, t.p75] for k, t in times.items()}}

    def train_dense(self) -> None:
        cfg = self.recipe.train
        if cfg is not None:
            loader = self.data.train.loader(cfg.batch_size, shuffle=True, seed=self.recipe.seed)
            finetune(self.model, loader, cfg.epochs, lr=cfg.lr, progress=self.progress)
        self.teacher = copy.deepcopy(self.model).eval()
        self.measure("dense")

    def do_sensitivity(self, step: SensitivityStep) -> None:
        """Validation accuracy with each prunable group pruned alone at each level (curves in the report)."""
        units = tuple(step.units) if step.units else None
        curves = sensitivity(self.model, Structured(sparsity=0.0, units=units), self._val_accuracy,
                             example_inputs=self.data.example, ratios=tuple(step.levels), progress=self.progress)
        self.sensitivity = curves.to_dict()

    def _val_accuracy(self, model: nn.Module) -> float:
        return accuracy(model, self.data.val.x, self.data.val.y)

    def do_prune(self, step: PruneStep) -> None:
        self.importance_before = input_importance(self.model, self.data.test.x)
        calibration = self.data.train.loader(64, shuffle=True, seed=self.recipe.seed)
        batches = [b for _, b in zip(range(step.calibration_batches), calibration, strict=False)]
        self.prune_result = prune(self.model, step.method, example_inputs=self.data.example, calibration=batches,
                                  progress=self.progress)
        if self.prune_result.plan.is_empty():
            raise PruningError(f"the prune step {step.method.to_dict()} removed nothing; raise its sparsity")
        self.tracker.log({f"prune/{k}": v for k, v in prune_metrics(self.prune_result).items()}, len(self.stages))
        self.measure("pruned")

    def do_finetune(self, step: FinetuneStep) -> None:
        loader = self.data.train.loader(step.batch_size, shuffle=True, seed=self.recipe.seed + 1)
        finetune(self.model, loader, step.epochs, teacher=self.teacher if step.distill else None, lr=step.lr,
                 temperature=step.temperature, alpha=step.alpha, log=self.tracker, progress=self.progress)
        self.measure("finetuned")

    def do_quantize(self, step: QuantizeStep) -> None:
        x = self.data.train.x
        calibration = [x[i : i + 64] for i in range(0, min(len(x), 64 * step.calibration_batches), 64)]
        q = quantize(self.model, self._onnx_path("quantized"), example_inputs=self.data.example,
                     calibration=calibration)
        self.stages.append({"name": "quantized", "metrics": {
            "accuracy": accuracy(q, self.data.test.x, self.data.test.y),
            "params": count_params(self.model), "nonzero_params": count_nonzero_params(self.model),
            "macs": count_macs(self.model, (self.data.example,)), "file_bytes": q.file_bytes,
            **self._latencies(_torch_int8(self.model), q)}})
        self._logged()

    def do_export(self, formats: list[str]) -> None:
        plan = self.prune_result.plan if self.prune_result else None
        if "safetensors" in formats:
            save(self.model, self.out.path("model"), plan=plan, metadata={"recipe": self.recipe.name})
        if "hf" in formats:
            save_pretrained(self.model, self.out.path("hf"), plan=plan, metadata={"recipe": self.recipe.name})
        if "onnx" in formats:
            export_onnx(self.model, self.out.path("model.onnx"), self.data.example)

    def explanations(self) -> dict:
        """What survived (structured pruning) and which input features the final model relies on."""
        if self.prune_result is None:
            return {}
        kept = kept_fractions(self.prune_result.units)
        after = input_importance(self.model, self.data.test.x)
        return {"kept_fraction": kept, "units": self.prune_result.to_dict()["units"],
                "input_importance_before": self.importance_before.squeeze().tolist(),
                "input_importance_after": after.squeeze().tolist()}

    def report(self) -> dict:
        return {
            "secateur_version": __version__, "recipe": self.recipe.model_dump(),
            "environment": {"torch": torch.__version__, "threads": torch.get_num_threads(),
                            "machine": platform.machine(), "python": platform.python_version()},
            "prune": self.prune_result.to_dict() if self.prune_result else None,
            "sensitivity": self.sensitivity,
            "notes": {"macs": "per sample", "latency_ms": f"median of {self.recipe.report.runs} runs (with the "
                      f"interquartile range), batch {self.recipe.report.batch_size}",
                      "file_bytes": "size of the stage's ONNX file",
                      "quantized.torch": "torch dynamic int8 (Linear) of the same model; the onnxruntime "
                      "column runs the static int8 QDQ file"},
            "stages": self.stages,
            "interpretability": self.explanations(),
        }


def _torch_int8(model: nn.Module) -> nn.Module:
    """torch's own dynamic int8 of the Linear layers, to time the quantized stage in torch."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def _model_for(recipe: Recipe, data: Dataset) -> nn.Module:
    """The recipe's model, checked to accept the data's inputs."""
    from .resolve import resolve

    model = resolve(recipe.model, recipe.weights, tuple(data.example.shape)).model
    try:
        with torch.no_grad():
            model.eval()(data.example)
    except Exception as err:  # any failure: the model and the data do not fit together
        raise RecipeError(f"model {recipe.model} does not accept {recipe.data}'s inputs of shape "
                          f"{tuple(data.example.shape)} ({type(err).__name__}: {str(err)[:200]}); pick a model "
                          "built for this data, e.g. zoo:digits-cnn for digits, zoo:mnist1d-cnn for mnist1d") from None
    return model


def run_recipe(recipe: Recipe, out: str | Path | OutputFolder, progress: bool = True) -> dict:
    """Run every step of ``recipe``, write its files under ``out`` (a folder path, or an open
    :class:`~secateur.io.OutputFolder`), and return the report dict."""
    with output_folder(out) as folder:
        run = Run(recipe, folder, progress)
        run.train_dense()
        for step in recipe.steps:
            if step.kind == "export":
                run.do_export(step.export.formats)
            else:
                getattr(run, f"do_{step.kind}")(step.config)
        return run.report()
