"""``secateur.profiling``: params, MACs, bytes on disk and latency in torch and onnxruntime."""

from __future__ import annotations

import inspect
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .counting import count_macs, count_nonzero_params, count_params
from .errors import InputError
from .inputs import Inputs, as_inputs, logits_of
from .latency import median_ms, ort_latency_ms
from .onnx_export import OnnxModel, export_onnx
from .transaction import eval_mode


@dataclass
class Profile:
    """Measured size and speed of a model. ``macs`` is per sample; latency is for the batch given."""

    params: int
    nonzero_params: int
    macs: int
    file_bytes: int
    batch_size: int
    latency_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class KeywordCall(nn.Module):
    """``model`` called with keyword inputs given positionally, returning its prediction tensor only (no
    key-value cache): a module ONNX export can trace for a Hugging Face model and a tokenizer's dict.

    >>> KeywordCall(nn.Bilinear(2, 2, 1), ["input2", "input1"])(torch.ones(1, 2), torch.ones(1, 2)).shape
    torch.Size([1, 1])
    """

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        super().__init__()
        self.model, self.names = model, names
        self.fixed = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}

    def forward(self, x0: torch.Tensor, x1: torch.Tensor | None = None, x2: torch.Tensor | None = None,
                x3: torch.Tensor | None = None) -> torch.Tensor:  # explicit: torch.export maps shapes onto names
        return logits_of(self.model(**dict(zip(self.names, (x0, x1, x2, x3), strict=False)), **self.fixed))


def exportable(model: nn.Module, inputs: Inputs) -> tuple[nn.Module, tuple]:
    """A module and positional arguments for ONNX export of ``model`` on ``inputs`` (keywords included)."""
    if not inputs.kwargs:
        return model, inputs.args
    if inputs.args:
        raise InputError("profile takes positional or keyword example inputs, not both")
    names = [k for k, v in inputs.kwargs.items() if isinstance(v, torch.Tensor)]
    if len(names) > 4:
        raise InputError(f"profile exports at most 4 keyword tensors; got {names}")
    return KeywordCall(model, names), tuple(inputs.kwargs[k] for k in names)


def profile(model: nn.Module, example_inputs: object, *, runs: int = 30, warmup: int = 5,
            onnx_path: str | Path | None = None) -> Profile:
    """Measure ``model`` on ``example_inputs`` (a tensor, tuple, tokenizer dict or DataLoader; their
    batch size is the latency batch).

    ``file_bytes`` is the size of the model's ONNX file (written to ``onnx_path`` or a temporary
    folder); latencies are medians of ``runs`` timed calls after ``warmup``.

    >>> profile(nn.Linear(4, 2), {"input": torch.ones(3, 4)}, runs=2, warmup=1).macs
    8
    """
    inputs = as_inputs(example_inputs)
    exported, args = exportable(model, inputs)
    with tempfile.TemporaryDirectory(prefix="secateur-p-") as tmp:
        path = export_onnx(exported, onnx_path or Path(tmp) / "model.onnx", args)
        with eval_mode(model), torch.inference_mode():
            torch_ms = median_ms(lambda: inputs.call(model), runs, warmup)
        return Profile(
            params=count_params(model), nonzero_params=count_nonzero_params(model),
            macs=count_macs(model, inputs) // inputs.batch_size, file_bytes=path.stat().st_size,
            batch_size=inputs.batch_size,
            latency_ms={"torch": torch_ms, "onnxruntime": ort_latency_ms(OnnxModel(path), args, runs, warmup)},
        )
