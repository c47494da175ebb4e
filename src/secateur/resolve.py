"""Model specs for recipes and the command line: ``zoo:NAME``, ``hf:FOLDER`` (a local Hugging Face model)
or ``py:package.module:factory`` (with ``--input-shape``, optionally ``--weights FILE.safetensors``)."""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .deps import require
from .errors import InvalidParameterError, ModelFileError

SPEC_HELP = "zoo:NAME, hf:FOLDER (a local Hugging Face model) or py:package.module:factory"


@dataclass
class Resolved:
    """A model, a factory that makes a fresh dense copy, and example inputs for tracing."""

    model: nn.Module
    factory: Callable[[], nn.Module]
    example_inputs: object


def check_spec(spec: str) -> str:
    """``spec`` if it is well formed (and names an existing zoo model or folder), else a named error."""
    kind, _, rest = spec.partition(":")
    if kind == "zoo":
        from .zoo import entry

        entry(rest)
    elif kind == "hf":
        if not (Path(rest) / "config.json").is_file():
            raise ModelFileError(f"{rest} is not a Hugging Face model folder (no config.json)")
    elif kind != "py" or not re.fullmatch(r"[\w.]+:\w+", rest):
        raise ModelFileError(f"model spec {spec!r} is not {SPEC_HELP}")
    return spec


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1,3,32,32"`` -> ``(1, 3, 32, 32)``, with a named error for anything else."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(v < 1 for v in shape):
        raise InvalidParameterError(f"input shape {text!r} is not positive integers separated by commas, e.g. "
                                    "1,3,32,32")
    return shape


def transformers_module():
    """``transformers``, or an error that says which extra installs it."""
    return require("transformers", "Hugging Face models")


def hf_factory(folder: str | Path) -> Callable[[], nn.Module]:
    """A factory that loads the Hugging Face model saved in ``folder`` (offline, weights included)."""
    folder = Path(folder)
    check_spec(f"hf:{folder}")
    arch = (json.loads((folder / "config.json").read_text()).get("architectures") or ["AutoModel"])[0]

    def make() -> nn.Module:
        transformers = transformers_module()
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


def _py(rest: str, weights: str | None, input_shape: tuple[int, ...] | None) -> Resolved:
    module_name, _, attr = rest.partition(":")
    try:
        make = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ModelFileError(f"cannot import {rest!r}: {exc}; use py:package.module:factory") from None
    if input_shape is None:
        raise InvalidParameterError("py: models need an input shape, e.g. --input-shape 1,3,32,32")
    try:
        model = make()
    except Exception as err:  # the user's factory failed: say so in one line
        raise ModelFileError(f"py:{rest}() failed ({type(err).__name__}: {str(err)[:160]})") from None
    if not isinstance(model, nn.Module):
        raise ModelFileError(f"py:{rest}() returned a {type(model).__name__}, not a torch module; name a factory "
                             "that builds the model")
    model.eval()
    if weights:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            model.load_state_dict(load_file(weights))
        except (OSError, SafetensorError, RuntimeError) as err:
            raise ModelFileError(f"cannot load weights {weights} into {type(model).__name__}: {err}") from None
    return Resolved(model, make, (torch.randn(*input_shape),))


def resolve(spec: str, weights: str | None = None, input_shape: tuple[int, ...] | None = None) -> Resolved:
    """Turn a model spec into a model with example inputs.

    >>> resolve("zoo:mlp").model.__class__.__name__
    'MLP'
    """
    check_spec(spec)
    kind, _, rest = spec.partition(":")
    if kind == "zoo":
        from .zoo import entry

        found = entry(rest)
        torch.manual_seed(0)
        try:
            model = found.make().eval()
        except ModuleNotFoundError as err:
            if err.name != "transformers":
                raise
            transformers_module()
        return Resolved(model, found.make, found.example())
    if kind == "hf":
        make = hf_factory(rest)
        model = make()
        return Resolved(model, make, hf_example(model))
    return _py(rest, weights, input_shape)
