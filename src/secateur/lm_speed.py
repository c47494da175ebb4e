"""Measured generation speed of causal language models: prefill and decode tokens per second in torch,
several models measured in turn (interleaved, so a busy machine slows all of them alike).

Prefill runs a ``(1, prompt)`` prompt once, building the key-value cache and the last position's logits
(as ``generate`` does). Decode then feeds back the greedy token ``new_tokens`` times, one token per step
with the cache: batch 1, the case a CPU serves.
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .transaction import eval_mode


@dataclass
class Speed:
    """Tokens per second of one model: medians over the repeats, with the slowest and fastest repeat."""

    prefill: float
    decode: float
    prefill_range: tuple[float, float]
    decode_range: tuple[float, float]


def _prefill_kwargs(model: nn.Module) -> dict:
    keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"use_cache": True, **({"logits_to_keep": 1} if keep else {})}


def prefill(model: nn.Module, prompt: torch.Tensor) -> object:
    """The model's output on ``prompt`` with the key-value cache built (call under ``no_grad``)."""
    return model(input_ids=prompt, **_prefill_kwargs(model))


def decode(model: nn.Module, out: object, new_tokens: int) -> object:
    """Feed back the greedy token of ``out`` ``new_tokens`` times with its cache; the last output."""
    for _ in range(new_tokens):
        out = model(input_ids=out.logits[:, -1:].argmax(-1), past_key_values=out.past_key_values, use_cache=True)
    return out


def time_generation(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> tuple[float, float]:
    """Seconds of (prefill of ``prompt``, ``new_tokens`` cached decode steps)."""
    with torch.no_grad(), eval_mode(model):
        start = time.perf_counter()
        out = prefill(model, prompt)
        middle = time.perf_counter()
        decode(model, out, new_tokens)
        return middle - start, time.perf_counter() - middle


def generation_speed(models: dict[str, nn.Module], prompt: torch.Tensor, new_tokens: int = 128,
                     repeats: int = 5) -> dict[str, Speed]:
    """Prefill and decode tokens/s of every model, measured in turn ``repeats`` times after one warm-up.

    >>> from transformers import LlamaConfig, LlamaForCausalLM
    >>> tiny = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
    ...                                     num_attention_heads=2, vocab_size=50))
    >>> speed = generation_speed({"tiny": tiny}, torch.zeros(1, 8, dtype=torch.long), new_tokens=4, repeats=2)
    >>> speed["tiny"].decode > 0
    True
    """
    for model in models.values():
        time_generation(model, prompt, min(new_tokens, 8))
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            prefill, decode = time_generation(model, prompt, new_tokens)
            runs[name].append((prompt.shape[1] / prefill, new_tokens / decode))
    out = {}
    for name, values in runs.items():
        pre, dec = [v[0] for v in values], [v[1] for v in values]
        out[name] = Speed(statistics.median(pre), statistics.median(dec), (min(pre), max(pre)), (min(dec), max(dec)))
    return out
