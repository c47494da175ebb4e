"""ONNX export (torch's dynamo exporter) with dynamic batch and sequence axes and the input names of the
model's forward signature, and a small onnxruntime wrapper that feeds inputs by name."""

from __future__ import annotations

import inspect
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .deps import require
from .inputs import Inputs, as_inputs, output_tensors
from .masks import baked_copy
from .progress import phase


def _quiet_exporter() -> None:
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    logging.getLogger("onnxscript").setLevel(logging.ERROR)


def _named(model: nn.Module, inputs: Inputs) -> dict[str, object]:
    """Every input under the name of the forward parameter it fills (positional ones in order)."""
    params = [n for n, p in inspect.signature(model.forward).parameters.items()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    named = {params[i] if i < len(params) else f"input_{i}": a for i, a in enumerate(inputs.args)}
    return {**named, **inputs.kwargs}


def _sequence_like(t: torch.Tensor) -> bool:
    """Token ids, attention masks, positions: integer ``(batch, length)`` tensors."""
    return t.dim() == 2 and not t.is_floating_point()


def _traceable(t: torch.Tensor) -> torch.Tensor:
    """torch.export specialises dimensions of size one: trace with a batch (and sequence) of two or more."""
    if t.shape[0] == 1:
        t = t.repeat(2, *([1] * (t.dim() - 1)))
    if _sequence_like(t) and t.shape[1] == 1:
        t = t.repeat(1, 2)
    return t


def _output_names(model: nn.Module, named: dict) -> list[str]:
    with torch.no_grad():
        out = model(**named)
    if isinstance(out, torch.Tensor):
        return ["output"]
    if hasattr(out, "keys"):
        return [k for k, v in out.items() if isinstance(v, torch.Tensor)]
    return [f"output_{i}" for i in range(len(output_tensors(out)))]


def export_onnx(model: nn.Module, path: str | os.PathLike, example_inputs: object) -> Path:
    """Write ``model`` as one self-contained ONNX file, inputs named after its forward parameters
    (``input_ids``, ``attention_mask``, ``x``), with a dynamic batch axis and, for token inputs, a
    dynamic sequence axis.

    Masks are folded into the exported weights; the model itself is not changed. The file is written
    to a temporary name first and moved into place, so a failed export leaves nothing half-written.

    >>> export_onnx(nn.Linear(4, 2), "/tmp/lin.onnx", torch.randn(1, 4)).name
    'lin.onnx'
    """
    require("onnxscript", "ONNX export")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frozen = baked_copy(model).eval()
    named = {k: _traceable(v) if isinstance(v, torch.Tensor) else v for k, v in _named(frozen, as_inputs(
        example_inputs)).items()}
    if getattr(getattr(frozen, "config", None), "use_cache", False):
        frozen.config.use_cache = False  # a KV cache object is not an ONNX output (the copy's own config)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {k: ({0: batch, 1: sequence} if _sequence_like(v) else {0: batch}) if isinstance(v, torch.Tensor)
               else None for k, v in named.items()}
    tensors = [k for k, v in named.items() if isinstance(v, torch.Tensor)]
    _quiet_exporter()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with warnings.catch_warnings(), phase(f"exporting {path.name}"):
        warnings.simplefilter("ignore")
        torch.onnx.export(frozen, (), str(tmp), kwargs=named, dynamo=True, dynamic_shapes=dynamic,
                          input_names=tensors, output_names=_output_names(frozen, named), external_data=False,
                          verbose=False)
    os.replace(tmp, path)
    return path


class OnnxModel:
    """An ONNX file run by onnxruntime, callable on torch tensors like the module it came from."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        ort = require("onnxruntime", "running ONNX models")
        self.path = Path(path)
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def file_bytes(self) -> int:
        return self.path.stat().st_size

    def feeds(self, inputs: Inputs) -> dict[str, np.ndarray]:
        """Inputs as onnxruntime feeds: keyword tensors by name, positional ones in order."""
        named = {k: v for k, v in inputs.kwargs.items() if k in self.input_names}
        rest = iter(n for n in self.input_names if n not in named)
        named |= {next(rest): a for a in inputs.args if isinstance(a, torch.Tensor)}
        return {k: v.detach().cpu().numpy() for k, v in named.items()}

    def run(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every output by name."""
        out = self.session.run(None, self.feeds(Inputs(args, kwargs)))
        return {name: torch.from_numpy(v) for name, v in zip(self.output_names, out, strict=True)}

    def __call__(self, *args: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """The first output, as the module's first output would be."""
        return next(iter(self.run(*args, **kwargs).values()))


def onnx_of(model: nn.Module, example_inputs: object, folder: str | os.PathLike | None = None) -> OnnxModel:
    """Export ``model`` into ``folder`` (a temporary one by default) and open it."""
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="secateur-"))
    return OnnxModel(export_onnx(model, folder / "model.onnx", example_inputs))
