"""The YAML recipe: model, data, steps (prune / finetune / quantize / export) and report, validated.

A misspelt key or an unknown choice fails with a :class:`RecipeError` that names the key's path
and lists the valid keys or choices.
"""

from __future__ import annotations

import os
import typing
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from .criteria import CRITERIA
from .errors import ModelFileError, RecipeError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Train(_Strict):
    """Dense training before pruning (for zoo models, which start untrained)."""

    epochs: int = 8
    lr: float = 3e-3
    batch_size: int = 64


class PruneStep(_Strict):
    method: Literal["structured", "unstructured"]
    sparsity: float | None = None
    target_macs: float | None = None
    target_params: float | None = None
    scope: Literal["layer", "global"] = "layer"
    criterion: str = "magnitude"
    round_to: int = 1
    ignore: list[str] = []

    @field_validator("criterion")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in CRITERIA:
            raise ValueError(f"unknown criterion {v!r}; choose one of {', '.join(CRITERIA)}")
        return v


class FinetuneStep(_Strict):
    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    distill: bool = True
    temperature: float = 4.0
    alpha: float = 0.7


class QuantizeStep(_Strict):
    mode: Literal["int8"] = "int8"
    calibration_batches: int = 8


class ExportStep(_Strict):
    formats: list[Literal["onnx", "safetensors"]] = ["onnx", "safetensors"]


class _OneKey(_Strict):
    """A step: exactly one of its keys is set."""

    @model_validator(mode="after")
    def _one(self) -> _OneKey:
        set_keys = [k for k in type(self).model_fields if getattr(self, k) is not None]
        if len(set_keys) != 1:
            raise ValueError(f"a step has exactly one of {', '.join(type(self).model_fields)}; got {set_keys}")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in type(self).model_fields if getattr(self, k) is not None)

    @property
    def config(self) -> BaseModel:
        return getattr(self, self.kind)


class Step(_OneKey):
    """One pipeline step: exactly one of its keys is set."""

    prune: PruneStep | None = None
    finetune: FinetuneStep | None = None
    quantize: QuantizeStep | None = None
    export: ExportStep | None = None


class Report(_Strict):
    batch_size: int = 256
    runs: int = 30
    plot: bool = True


class Recipe(_Strict):
    """A whole run. ``model`` is ``zoo:NAME``; ``data`` names an offline data set."""

    name: str = "run"
    model: str
    data: str = "digits"
    seed: int = 0
    train: Train | None = Train()
    steps: list[Step]
    report: Report = Report()

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        from .zoo import MODELS

        if not v.startswith("zoo:") or v[4:] not in MODELS:
            raise ValueError(f"unknown model {v!r}; choose one of {', '.join('zoo:' + m for m in MODELS)}")
        return v

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        from .zoo import DATASETS

        if v not in DATASETS:
            raise ValueError(f"unknown data set {v!r}; choose one of {', '.join(DATASETS)}")
        return v


class Windows(_Strict):
    windows: int = 32
    length: int = 512


class LMPruneStep(_Strict):
    method: Literal["magnitude", "wanda", "sparsegpt"]
    sparsity: float = 0.5
    pattern: str = "unstructured"


class LMStep(_OneKey):
    """One language-model step: exactly one of its keys is set."""

    prune: LMPruneStep | None = None
    export: ExportStep | None = None


class LMRecipe(_Strict):
    """One-shot pruning of a causal language model, measured by perplexity on held-out text."""

    task: Literal["language-model"]
    name: str = "lm"
    model: str
    data: str = "stdlib-docstrings"
    evaluate_on: list[str] = ["stdlib-docstrings", "python-reference"]
    calibration: Windows = Windows()
    evaluation: Windows = Windows()
    prompt: str = "def read_config(path):\n    \"\"\""
    steps: list[LMStep]

    @field_validator("model")
    @classmethod
    def _lm(cls, v: str) -> str:
        if v != "llm:smollm2" and not v.startswith("hf:"):
            raise ValueError(f"unknown model {v!r}; choose llm:smollm2 or hf:FOLDER (a local causal LM)")
        return v


def _model_at(loc: tuple, root: type[BaseModel] = None) -> type[BaseModel] | None:
    """The recipe model class that owns the key at ``loc`` (to list its valid keys)."""
    cls: object = root or Recipe
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        ann = cls.model_fields[part].annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)] or [ann]
        inner = [typing.get_args(a)[0] if typing.get_origin(a) is list else a for a in args]
        cls = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), None)
    return cls if isinstance(cls, type) else None


def _explain(err: ValidationError, root: type[BaseModel]) -> str:
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "recipe"
        if e["type"] == "extra_forbidden":
            owner = _model_at(e["loc"], root)
            valid = ", ".join(owner.model_fields) if owner else "?"
            lines.append(f"{where}: unknown key {e['loc'][-1]!r}; valid keys here: {valid}")
        else:
            lines.append(f"{where}: {e['msg'].removeprefix('Value error, ')}")
    return "invalid recipe:\n  " + "\n  ".join(lines)


def parse_recipe(data: dict) -> Recipe | LMRecipe:
    """Validate a recipe given as a dict (``task: language-model`` selects the language-model schema)."""
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe is a mapping of keys, got {type(data).__name__}")
    schema = LMRecipe if data.get("task") == "language-model" else Recipe
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise RecipeError(_explain(err, schema)) from None


def load_recipe(path: str | os.PathLike) -> Recipe | LMRecipe:
    """Read and validate a YAML recipe file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no recipe file at {path}; see examples/ for working recipes")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from None
    return parse_recipe(data)
