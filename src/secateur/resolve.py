"""Model specs for the command line: ``zoo:NAME``, ``hf:FOLDER`` (a local Hugging Face model) or
``py:package.module:factory`` (optionally with ``--weights FILE.safetensors``)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import ModelFileError


@dataclass
class Resolved:
    """A model, a factory that makes a fresh dense copy, and example inputs for tracing."""

    model: nn.Module
    factory: Callable[[], nn.Module]
    example_inputs: object


def _zoo(name: str) -> Resolved:
    from .zoo import MODELS
    from .zoo.hf import HF
    from .zoo.tricky import TRICKY

    table = {**{k: (v[0], lambda: (torch.rand(2, 1, 8, 8),)) for k, v in MODELS.items()}, **TRICKY, **HF}
    if name not in table:
        raise ModelFileError(f"unknown zoo model {name!r}; choose one of {', '.join(sorted(table))}")
    make, example = table[name]
    torch.manual_seed(0)
    return Resolved(make().eval(), make, example())


def hf_factory(folder: str | Path) -> Callable[[], nn.Module]:
    """A factory that loads the Hugging Face model saved in ``folder`` (offline, weights included)."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise ModelFileError(f"{folder} is not a Hugging Face model folder (no config.json)")
    arch = (json.loads(config_path.read_text()).get("architectures") or ["AutoModel"])[0]

    def make() -> nn.Module:
        import transformers

        cls = getattr(transformers, arch, transformers.AutoModel)
        return cls.from_pretrained(str(folder), local_files_only=True).eval()

    return make


def hf_example(model: nn.Module, batch: int = 2, length: int = 16) -> object:
    """Example inputs from a Hugging Face config: token ids for text models, pixels for vision ones."""
    config = model.config
    if getattr(config, "vocab_size", None):
        return {"input_ids": torch.randint(0, config.vocab_size, (batch, length))}
    size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
    return (torch.randn(batch, getattr(config, "num_channels", 3), size, size),)


def resolve(spec: str, weights: str | None = None, input_shape: tuple[int, ...] | None = None) -> Resolved:
    """Turn a model spec into a model with example inputs.

    >>> resolve("zoo:mlp").model.__class__.__name__
    'MLP'
    """
    kind, _, rest = spec.partition(":")
    if kind == "zoo":
        return _zoo(rest)
    if kind == "hf":
        make = hf_factory(rest)
        model = make()
        return Resolved(model, make, hf_example(model))
    if kind == "py":
        module_name, _, attr = rest.partition(":")
        try:
            make = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ModelFileError(f"cannot import {rest!r}: {exc}; use py:package.module:factory") from None
        model = make().eval()
        if weights:
            from safetensors.torch import load_file

            model.load_state_dict(load_file(weights))
        if input_shape is None:
            raise ModelFileError("py: models need --input-shape, e.g. --input-shape 1,3,32,32")
        return Resolved(model, make, (torch.randn(*input_shape),))
    raise ModelFileError(f"model spec {spec!r} is not zoo:NAME, hf:FOLDER or py:module:factory")
