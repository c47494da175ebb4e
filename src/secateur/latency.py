"""Latency: the median of repeated timed runs after warm-up, in torch and in onnxruntime."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from .onnx_export import OnnxModel
from .transaction import eval_mode


def median_ms(fn: Callable[[], object], runs: int = 30, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds over ``runs`` calls after ``warmup`` calls.

    >>> median_ms(lambda: sum(range(100)), runs=20) >= 0
    True
    """
    if runs < 1:
        raise ValueError(f"runs={runs} must be at least 1")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def torch_latency_ms(model: nn.Module, inputs: tuple, runs: int = 30, warmup: int = 5) -> float:
    """Median forward time of ``model`` on ``inputs`` (eval mode, inference mode)."""
    with eval_mode(model), torch.inference_mode():
        return median_ms(lambda: model(*inputs), runs, warmup)


def ort_latency_ms(onnx_model: OnnxModel, inputs: tuple, runs: int = 30, warmup: int = 5) -> float:
    """Median run time of an ONNX model in onnxruntime on ``inputs``."""
    arrays = [x.detach().cpu().numpy() for x in inputs]
    return median_ms(lambda: onnx_model.run_numpy(*arrays), runs, warmup)
