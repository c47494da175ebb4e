"""int8 post-training quantization through onnxruntime, keeping pruned weights at zero.

Measured on the digits CNN here (batch 256, 2 cores): static QDQ of Conv and Gemm with calibration
was the smallest file and 1.3x faster than fp32, while dynamic int8 was slower than fp32 (dynamic
ConvInteger is 10-27x slower on this CPU). So: ``static`` when calibration data is given, else
``dynamic`` restricted to MatMul/Gemm. Zero weights quantize to exactly zero (symmetric int8).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .deps import require
from .errors import InvalidParameterError, ModelFileError
from .onnx_export import OnnxModel, export_onnx


class _Reader:
    """onnxruntime CalibrationDataReader over batches of model inputs."""

    def __init__(self, name: str, batches: Iterable[torch.Tensor]) -> None:
        self._items = iter([{name: b.detach().cpu().numpy()} for b in batches])

    def get_next(self) -> dict | None:
        return next(self._items, None)


def quantize(
    model: nn.Module | str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    example_inputs: torch.Tensor | tuple | None = None,
    calibration: Iterable[torch.Tensor] | None = None,
    mode: Literal["int8"] = "int8",
) -> OnnxModel:
    """Quantize a module (exported first) or an ONNX file to int8 and open the result.

    With ``calibration`` (input batches) weights and activations of Conv, Gemm and MatMul are
    quantized statically (QDQ, per channel); without it MatMul/Gemm are quantized dynamically.

    >>> q = quantize(nn.Linear(8, 4), "/tmp/q.onnx", example_inputs=torch.randn(2, 8))
    >>> q(torch.randn(3, 8)).shape
    torch.Size([3, 4])
    """
    ort = require("onnxruntime.quantization", "int8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode != "int8":
        raise InvalidParameterError(f"mode={mode!r} is not supported; use 'int8'")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="secateur-q-") as tmp:
        if isinstance(model, nn.Module):
            if example_inputs is None:
                raise InvalidParameterError("quantizing a module needs example_inputs=... to export it to ONNX first")
            src = export_onnx(model, Path(tmp) / "fp32.onnx", example_inputs)
        else:
            src = Path(model)
            if not src.is_file():
                raise ModelFileError(f"no ONNX file at {src}; export one with secateur.export_onnx first")
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre))
        staged = Path(tmp) / "int8.onnx"
        if calibration is not None:
            name = OnnxModel(pre).input_names[0]
            ort.quantize_static(str(pre), str(staged), _Reader(name, calibration), quant_format=ort.QuantFormat.QDQ,
                                per_channel=True, activation_type=ort.QuantType.QUInt8,
                                weight_type=ort.QuantType.QInt8, op_types_to_quantize=["Conv", "Gemm", "MatMul"])
        else:
            ort.quantize_dynamic(str(pre), str(staged), op_types_to_quantize=["MatMul", "Gemm"],
                                 weight_type=ort.QuantType.QInt8)
        os.replace(staged, out_path)
    return OnnxModel(out_path)
