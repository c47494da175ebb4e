"""The YAML recipe: model, data, steps (prune / finetune / quantize / export) and report, validated.

A misspelt key or an unknown choice fails with a :class:`RecipeError` that names the key's path
and lists the valid keys or choices.
"""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from .errors import ModelFileError, RecipeError, SecateurError

MAX_BYTES = 1 << 20
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _method(value: Any, step_keys: tuple[str, ...]) -> Any:
    """A prune step's mapping -> the method object (the same classes Python uses); step keys stay aside."""
    if not isinstance(value, dict):
        raise ValueError(f"a prune step is a mapping with a method: key, e.g. {{method: structured, sparsity: 0.5}}; "
                         f"got {type(value).__name__}")
    from .methods import Method

    options = {k: v for k, v in value.items() if k not in step_keys}
    try:
        method = Method.from_dict(options, where="prune")
    except SecateurError as err:
        raise ValueError(str(err).removeprefix("prune: ")) from None
    if _prunes_nothing(method):
        raise ValueError(f"this step prunes nothing ({method.to_dict()}); give a sparsity above 0, ratios or a target")
    return method


def _prunes_nothing(method: Any) -> bool:
    """A sparsity of 0 with no per-group ratios, per-layer profile or target that would prune something (a
    computed profile such as OWL spreads the sparsity asked, so with 0 it prunes nothing either)."""
    given = [getattr(method, key, None) for key in ("ratios", "profile")]
    nonzero = any(v > 0 for values in given if isinstance(values, dict) for v in values.values())
    return getattr(method, "sparsity", None) == 0 and getattr(method, "target", None) is None and not nonzero


class _PruneStep(_Strict):
    """``method:`` names a registered method; every other key is one of its options."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    method: Any

    @model_validator(mode="before")
    @classmethod
    def _parse(cls, value: Any) -> Any:
        step_keys = tuple(k for k in cls.model_fields if k != "method")
        step = {k: v for k, v in value.items() if k in step_keys} if isinstance(value, dict) else {}
        return {"method": _method(value, step_keys), **step}

    @field_serializer("method")
    def _dump(self, method: Any) -> dict:
        return method.to_dict()


class PruneStep(_PruneStep):
    """A prune step of a recipe; ``calibration_batches`` training batches feed data-driven criteria."""

    calibration_batches: int = Field(8, ge=1)


class Train(_Strict):
    """Dense training before pruning (for zoo models, which start untrained)."""

    epochs: int = Field(8, ge=0)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(64, ge=1)


class FinetuneStep(_Strict):
    epochs: int = Field(5, ge=0)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    distill: bool = True
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)


class SensitivityStep(_Strict):
    """Validation quality with each prunable group pruned alone at each level (curves in the report)."""

    levels: list[float] = Field([0.25, 0.5, 0.75], min_length=1)
    units: list[Literal["channels", "heads", "hidden", "groups"]] | None = None

    @field_validator("levels")
    @classmethod
    def _fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < x < 1 for x in v):
            raise ValueError(f"levels {v} must be fractions in (0, 1), e.g. [0.25, 0.5, 0.75]")
        return v


class LMFinetuneStep(_Strict):
    """Recovery of a pruned language model: ``steps`` optimizer steps (or ``minutes`` of training, whichever
    ends first) on windows of ``length`` tokens from the first half of the recipe's text, distilled from the
    dense model (``distill``) with masks held."""

    steps: int = Field(50, ge=1)
    minutes: float | None = Field(None, gt=0)
    length: int = Field(256, ge=2)
    batch_size: int = Field(4, ge=1)
    accumulate: int = Field(1, ge=1)
    lr: float = Field(1e-4, gt=0)
    distill: bool = True
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(1.0, ge=0, le=1)
    hidden_weight: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    checkpoint_every: int | None = Field(None, ge=1)


class Log(_Strict):
    """Metrics of every stage (and every fine-tuning step) to TensorBoard under ``<out>/tensorboard``;
    ``tensorboard: null`` logs when the tensorboard package is installed."""

    tensorboard: bool | None = None


class QuantizeStep(_Strict):
    mode: Literal["int8"] = "int8"
    calibration_batches: int = Field(8, ge=1)


class ExportStep(_Strict):
    """``safetensors``: ``model/`` (``secateur.save``); ``hf``: ``hf/``, a Hugging Face checkpoint
    (``secateur.save_pretrained``, transformers models only); ``onnx``: ``model.onnx``."""

    formats: list[Literal["onnx", "safetensors", "hf"]] = ["onnx", "safetensors"]


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

    sensitivity: SensitivityStep | None = None
    prune: PruneStep | None = None
    finetune: FinetuneStep | None = None
    quantize: QuantizeStep | None = None
    export: ExportStep | None = None


class Report(_Strict):
    batch_size: int = Field(256, ge=1)
    runs: int = Field(30, ge=1)
    plot: bool = True


def _name(value: str) -> str:
    if not NAME.fullmatch(value) or value in (".", ".."):
        raise ValueError(f"name {value!r} must be a plain name (letters, digits, '.', '_', '-'; no path): it names "
                         "the output folder runs/<name>")
    return value


class _Named(_Strict):
    """A recipe's ``name`` names its output folder ``runs/<name>``: a plain name, never a path."""

    @field_validator("name", check_fields=False)
    @classmethod
    def _plain_name(cls, v: str) -> str:
        return _name(v)


class Recipe(_Named):
    """A whole run. ``model`` is ``zoo:NAME``, ``hf:FOLDER`` or ``py:module:factory``; ``data`` names an
    offline data set or a ``.npz`` file of your own (arrays ``x``, ``y`` or ``x_train``, ``y_train``,
    ``x_test``, ``y_test``)."""

    name: str = "run"
    model: str
    weights: str | None = None
    data: str = "digits"
    seed: int = 0
    train: Train | None = Train()
    steps: list[Step]
    report: Report = Report()
    log: Log = Log()

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        from .resolve import check_spec

        return _checked(check_spec, v)

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        from .zoo import check_data

        return _checked(check_data, v)


def _checked(check: Any, value: str) -> str:
    try:
        check(value)
    except SecateurError as err:
        raise ValueError(str(err)) from None
    return value


class Windows(_Strict):
    windows: int = Field(32, ge=1)
    length: int = Field(512, ge=2)


class Speed(_Strict):
    """Generation speed measured dense and pruned in turn: prefill of ``prompt`` tokens, then ``new_tokens``
    decode steps at batch 1 with the KV cache (``secateur.lm_speed``)."""

    prompt: int = Field(512, ge=2)
    new_tokens: int = Field(128, ge=1)
    repeats: int = Field(3, ge=1)


class LMPruneStep(_PruneStep):
    """A one-shot language-model prune step: ``method`` names any method, e.g. wanda or sparsegpt."""


class LMStep(_OneKey):
    """One language-model step: exactly one of its keys is set."""

    prune: LMPruneStep | None = None
    finetune: LMFinetuneStep | None = None
    export: ExportStep | None = None


class LMRecipe(_Named):
    """Pruning of a causal language model, measured by perplexity on held-out text. ``data`` and each of
    ``evaluate_on`` name a shipped corpus or a UTF-8 text file of your own. ``stream: true`` (``hf:``
    folders of safetensors) prunes block by block from the files, for models larger than memory: the
    pruned checkpoint goes to ``<out>/model`` and each evaluation loads one model at a time."""

    task: Literal["language-model"]
    name: str = "lm"
    model: str
    stream: bool = False
    data: str = "stdlib-docstrings"
    evaluate_on: list[str] = ["stdlib-docstrings", "python-reference"]
    calibration: Windows = Windows()
    evaluation: Windows = Windows()
    prompt: str = "def read_config(path):\n    \"\"\""
    speed: Speed | None = None
    steps: list[LMStep]
    log: Log = Log()

    @field_validator("model")
    @classmethod
    def _lm(cls, v: str) -> str:
        if v != "llm:smollm2" and not v.startswith("hf:"):
            raise ValueError(f"unknown model {v!r}; choose llm:smollm2 or hf:FOLDER (a local causal LM)")
        if v.startswith("hf:"):
            from .resolve import check_spec

            return _checked(check_spec, v)
        return v

    @model_validator(mode="after")
    def _streamed(self) -> LMRecipe:
        if self.stream and not self.model.startswith("hf:"):
            raise ValueError("stream: true prunes the safetensors files of an hf:FOLDER model; give model: hf:FOLDER")
        return self

    @field_validator("data")
    @classmethod
    def _text(cls, v: str) -> str:
        from .llm.corpus import check_text

        return _checked(check_text, v)

    @field_validator("evaluate_on")
    @classmethod
    def _texts(cls, v: list[str]) -> list[str]:
        from .llm.corpus import check_text

        return [_checked(check_text, t) for t in v]


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
    except RecursionError:
        raise RecipeError("the recipe is nested too deeply") from None


def load_recipe(path: str | os.PathLike) -> Recipe | LMRecipe:
    """Read and validate a YAML recipe file (UTF-8, at most 1 MiB, checked before parsing)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"no recipe file at {path}; see examples/ for working recipes")
    if path.stat().st_size > MAX_BYTES:
        raise RecipeError(f"{path} is {path.stat().st_size:,} bytes; a recipe is at most {MAX_BYTES:,} bytes")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise RecipeError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from None
    except RecursionError:
        raise RecipeError(f"{path} is nested too deeply to be a recipe") from None
    return parse_recipe(data)
