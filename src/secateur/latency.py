"""Latency: repeated timed runs after warm-up, reported as the median with the interquartile range,
in torch and in onnxruntime. A comparison is only called reliable when the ranges do not overlap."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .errors import InvalidParameterError
from .inputs import Inputs, as_inputs
from .transaction import eval_mode


@dataclass(frozen=True)
class Timing:
    """Milliseconds over ``runs`` timed calls: median and the 25th / 75th percentiles."""

    median: float
    p25: float
    p75: float
    runs: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05 = 5%)."""
        return (self.p75 - self.p25) / self.median if self.median else 0.0

    def overlaps(self, other: Timing) -> bool:
        """True when the two interquartile ranges overlap: the difference is within the noise."""
        return self.p25 <= other.p75 and other.p25 <= self.p75

    def to_dict(self) -> dict:
        return asdict(self)


def measure_ms(fn: Callable[[], object], runs: int = 30, warmup: int = 5) -> Timing:
    """Time ``fn()`` ``runs`` times after ``warmup`` calls.

    >>> measure_ms(lambda: sum(range(100)), runs=20).runs
    20
    """
    if runs < 1 or warmup < 0:
        raise InvalidParameterError(f"runs={runs} must be at least 1 and warmup={warmup} at least 0")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    quartiles = statistics.quantiles(times, n=4) if runs > 1 else [times[0]] * 3
    return Timing(statistics.median(times), quartiles[0], quartiles[2], runs)


def torch_latency(model: nn.Module, inputs: object, runs: int = 30, warmup: int = 5) -> Timing:
    """Forward time of ``model`` on ``inputs`` (eval mode, inference mode)."""
    batch = as_inputs(inputs)
    with eval_mode(model), torch.inference_mode():
        return measure_ms(lambda: batch.call(model), runs, warmup)


def ort_latency(onnx_model, inputs: object, runs: int = 30, warmup: int = 5) -> Timing:
    """Run time of an ONNX model (:class:`~secateur.onnx_export.OnnxModel`) in onnxruntime on ``inputs``."""
    feeds = onnx_model.feeds(as_inputs(inputs))
    return measure_ms(lambda: onnx_model.session.run(None, feeds), runs, warmup)


def torch_latency_ms(model: nn.Module, inputs: object, runs: int = 30, warmup: int = 5) -> float:
    """Median forward time in milliseconds (see :func:`torch_latency`)."""
    return torch_latency(model, inputs, runs, warmup).median


def ort_latency_ms(onnx_model, inputs: object | Inputs, runs: int = 30, warmup: int = 5) -> float:
    """Median onnxruntime time in milliseconds (see :func:`ort_latency`)."""
    return ort_latency(onnx_model, inputs, runs, warmup).median
