"""``secateur.profiling``: params, MACs, bytes on disk and latency in torch and onnxruntime."""

from __future__ import annotations

import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from .counting import count_macs, count_nonzero_params, count_params
from .inputs import as_inputs
from .latency import ort_latency_ms, torch_latency_ms
from .onnx_export import OnnxModel, export_onnx


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


def profile(model: nn.Module, example_inputs: object, *, runs: int = 30, warmup: int = 5,
            onnx_path: str | Path | None = None) -> Profile:
    """Measure ``model`` on ``example_inputs`` (a tensor, tuple, tokenizer dict or DataLoader; their
    batch size is the latency batch).

    ``file_bytes`` is the size of the model's ONNX file (written to ``onnx_path`` or a temporary
    folder); latencies are medians of ``runs`` timed calls after ``warmup``.

    >>> import torch
    >>> profile(nn.Linear(4, 2), {"input": torch.ones(3, 4)}, runs=2, warmup=1).macs
    8
    """
    inputs = as_inputs(example_inputs)
    with tempfile.TemporaryDirectory(prefix="secateur-p-") as tmp:
        path = export_onnx(model, onnx_path or Path(tmp) / "model.onnx", inputs)
        return Profile(
            params=count_params(model), nonzero_params=count_nonzero_params(model),
            macs=count_macs(model, inputs) // inputs.batch_size, file_bytes=path.stat().st_size,
            batch_size=inputs.batch_size,
            latency_ms={"torch": torch_latency_ms(model, inputs, runs, warmup),
                        "onnxruntime": ort_latency_ms(OnnxModel(path), inputs, runs, warmup)},
        )
