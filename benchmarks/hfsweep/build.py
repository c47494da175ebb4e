"""Tiny random-weight models for every registered Hugging Face model type, and example inputs for them.

The class comes from ``AutoModel``'s mapping (the base model), else from the first other auto mapping
that names the type. Inputs are made from the class's ``main_input_name`` and the config; a few
candidate sets are tried (with decoder ids, with pixels beside text, audio as (B, T) or (B, 1, T)) and
the first one the dense model runs on is kept.

>>> t = tiny("bert")
>>> type(t.model).__name__, tuple(t.inputs["input_ids"].shape), t.variant
('BertModel', (2, 8), 'small')
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from transformers import AutoConfig
from transformers.models.auto import configuration_auto, modeling_auto

from .shrink import IMAGE, SMALL, WIDE, shrink, smallest, special_ids

BATCH, SEQ, AUDIO = 2, 8, 4000
VARIANTS = {"small": SMALL, "wide": WIDE}  # tried in this order
PREFERRED = ("MODEL_MAPPING_NAMES", "MODEL_FOR_CAUSAL_LM_MAPPING_NAMES", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES",
             "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES", "MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES")


class BuildError(RuntimeError):
    """The tiny model could not be built (its config or its constructor failed)."""


class DenseError(RuntimeError):
    """The tiny dense model does not run forward on any candidate inputs."""


def _mappings() -> list[dict]:
    others = sorted(n for n in dir(modeling_auto) if n.endswith("MAPPING_NAMES") and n.startswith("MODEL_")
                    and n not in PREFERRED)
    return [getattr(modeling_auto, n) for n in (*PREFERRED, *others)]


def model_types() -> list[str]:
    """Every model type with a config and at least one model class in an auto mapping."""
    mappings = _mappings()
    return [t for t in configuration_auto.CONFIG_MAPPING_NAMES if any(t in m for m in mappings)]


def class_name(model_type: str) -> str:
    """The model class picked for ``model_type`` (see the module docstring)."""
    name = next(m[model_type] for m in _mappings() if model_type in m)
    return name[0] if isinstance(name, list | tuple) else name


def model_class(model_type: str) -> type:
    import transformers

    return getattr(transformers, class_name(model_type))


def tiny_config(model_type: str, variant: str = "small"):
    """The shrunk default config of ``model_type``."""
    return shrink(AutoConfig.for_model(model_type), VARIANTS[variant])


def factory(model_type: str, variant: str = "small") -> Callable[[], torch.nn.Module]:
    """A function that builds the same tiny model (same weights) every time it is called."""
    cls, config = model_class(model_type), tiny_config(model_type, variant)

    def make() -> torch.nn.Module:
        torch.manual_seed(0)
        return cls(copy.deepcopy(config)).float().eval()  # pruning rewrites model.config: never share it

    return make


def _ids(config, length: int = SEQ) -> torch.Tensor:
    vocab = smallest(config, ("vocab_size",), 100)
    allowed = [i for i in range(3, min(vocab, 100)) if i not in special_ids(config)] or [0]
    pick = torch.randint(0, len(allowed), (BATCH, length), generator=torch.Generator().manual_seed(0))
    return torch.tensor(allowed)[pick]


def _pixels(config) -> torch.Tensor:
    size = smallest(config, ("image_size",), IMAGE)
    channels = smallest(config, ("num_channels",), 3)
    return torch.randn(BATCH, channels, size, size, generator=torch.Generator().manual_seed(0))


def _features(config) -> Iterator[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    mels = smallest(config, ("num_mel_bins", "feature_size", "input_feat_per_channel", "n_mels"), 80)
    frames = 2 * smallest(config, ("max_source_positions",), 32)
    yield torch.randn(BATCH, mels, frames, generator=g)
    yield torch.randn(BATCH, 64, mels, generator=g)


def _main_inputs(name: str, config) -> Iterator[dict]:
    if name == "pixel_values":
        pixels = _pixels(config)
        frames = smallest(config, ("num_frames",), 8)
        yield from ({name: pixels}, {name: pixels[:, None].expand(-1, frames, -1, -1, -1).contiguous()})
    elif name == "input_values":
        wave = torch.randn(BATCH, AUDIO, generator=torch.Generator().manual_seed(0))
        yield from ({name: wave}, {name: wave[:, None]})
    elif name == "input_features":
        yield from ({name: f} for f in _features(config))
    else:
        yield {"input_ids": _ids(config)}


def candidate_inputs(model: torch.nn.Module) -> Iterator[dict]:
    """Input sets to try, simplest first."""
    config, name = model.config, getattr(model, "main_input_name", "input_ids")
    params = inspect.signature(model.forward).parameters
    fixed = {"use_cache": False} if "use_cache" in params else {}  # a cache object is no output to compare
    for main in _main_inputs(name, config):
        main = {**main, **fixed}
        extras = [{}]
        if "decoder_input_ids" in params:
            extras = [{"decoder_input_ids": _ids(config)}, {}]
        for extra in extras:
            yield {**main, **extra}
            if name != "pixel_values" and "pixel_values" in params:
                yield {**main, **extra, "pixel_values": _pixels(config)}


def run_dense(model: torch.nn.Module) -> tuple[dict, object]:
    """The first candidate inputs ``model`` runs on, and its output; DenseError if none works."""
    errors = []
    for inputs in candidate_inputs(model):
        try:
            with torch.no_grad():
                torch.manual_seed(0)
                return inputs, model(**inputs)
        except Exception as exc:  # noqa: PERF203  any failure means: try the next candidate
            errors.append(_short(exc))
    raise DenseError(errors[0] if errors else "no candidate inputs")


def default_builds(model_type: str) -> bool:
    """Whether the unshrunk default config builds (on the meta device: no memory, no compute)."""
    try:
        with torch.device("meta"):
            model_class(model_type)(AutoConfig.for_model(model_type))
        return True
    except Exception:  # any failure: the default does not build either
        return False


@dataclass
class Tiny:
    """A tiny model that runs, the factory that rebuilds it, the inputs it runs on, and the shrink variant."""

    make: Callable[[], torch.nn.Module]
    model: torch.nn.Module
    inputs: dict
    variant: str


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc).strip() else ''}"


def tiny(model_type: str) -> Tiny:
    """The first shrink variant of ``model_type`` that builds and runs; BuildError or DenseError if none does.

    A BuildError says whether the unshrunk default config builds at all."""
    built, errors = False, []
    for variant in VARIANTS:
        try:
            make = factory(model_type, variant)
            model = make()
        except Exception as exc:  # noqa: PERF203  a config or constructor error: try the next variant
            errors.append(_short(exc))
            continue
        built = True
        try:
            return Tiny(make, model, run_dense(model)[0], variant)
        except DenseError as exc:
            errors.append(str(exc))
    if built:
        raise DenseError(errors[0])
    prefix = "" if default_builds(model_type) else "the default config does not build either; "
    raise BuildError(prefix + errors[0])
