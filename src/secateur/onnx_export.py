"""ONNX export (torch's dynamo exporter, dynamic batch) and a small onnxruntime wrapper."""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .masks import baked_copy


def _quiet_exporter() -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)


def export_onnx(model: nn.Module, path: str | os.PathLike, example_inputs: torch.Tensor | tuple) -> Path:
    """Write ``model`` as one self-contained ONNX file with a dynamic batch dimension.

    Masks are folded into the exported weights; the model itself is not changed. The file is written
    to a temporary name first and moved into place, so a failed export leaves nothing half-written.

    >>> export_onnx(nn.Linear(4, 2), "/tmp/lin.onnx", torch.randn(1, 4)).name
    'lin.onnx'
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frozen = baked_copy(model).eval()
    # torch.export specialises a dimension of size 1, so trace with a batch of at least two.
    inputs = tuple(x.repeat(2, *([1] * (x.dim() - 1))) if x.shape[0] == 1 else x for x in inputs)
    batch = torch.export.Dim("batch")
    dynamic = tuple({0: batch} for _ in inputs)
    names = [f"input_{i}" for i in range(len(inputs))] if len(inputs) > 1 else ["input"]
    _quiet_exporter()
    tmp = path.with_name(f".{path.name}.tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(frozen, inputs, str(tmp), dynamo=True, dynamic_shapes=dynamic, input_names=names,
                          output_names=["output"], external_data=False, verbose=False)
    os.replace(tmp, path)
    return path


class OnnxModel:
    """An ONNX file run by onnxruntime, callable on torch tensors like the module it came from."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def run_numpy(self, *arrays: np.ndarray) -> np.ndarray:
        return self.session.run(None, dict(zip(self.input_names, arrays, strict=True)))[0]

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run_numpy(*(x.detach().cpu().numpy() for x in inputs)))


def onnx_of(model: nn.Module, example_inputs: tuple, folder: str | os.PathLike | None = None) -> OnnxModel:
    """Export ``model`` into ``folder`` (a temporary one by default) and open it."""
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="secateur-"))
    return OnnxModel(export_onnx(model, folder / "model.onnx", example_inputs))
