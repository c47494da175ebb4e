"""The method base class, the registry of method names, and pruning targets.

A method is a frozen dataclass that says *what* to remove. Its fields are its whole schema: the same
class is the Python call, the recipe entry (``{method: structured, sparsity: 0.5}``) and the record
in a saved model's manifest (``to_dict`` carries a format ``version``; ``from_dict`` reads it back).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..errors import InvalidParameterError, InvalidSparsityError, UnknownMethodError
from ..schema import Spec, build

Scope = Literal["layer", "global"]
METHODS: dict[str, type[Method]] = {}


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name`` in recipes, the CLI and manifests.

    >>> sorted(METHODS)[:3]
    ['magnitude', 'semistructured', 'sparsegpt']
    """
    METHODS[cls.name] = cls
    return cls


def check_fraction(name: str, value: float, *, low_open: bool = False, high_open: bool = True) -> None:
    """Raise :class:`InvalidSparsityError` unless ``value`` lies in the interval."""
    low_ok = value > 0 if low_open else value >= 0
    high_ok = value < 1 if high_open else value <= 1
    if not (low_ok and high_ok):
        lo, hi = "(0" if low_open else "[0", "1)" if high_open else "1]"
        raise InvalidSparsityError(f"{name}={value!r} is outside {lo}, {hi}; pass a fraction such as 0.5")


def check_patterns(name: str, patterns: tuple[str, ...]) -> None:
    if any(not p for p in patterns):
        raise InvalidParameterError(f"{name} holds an empty pattern; give module names or fnmatch patterns")


def match(name: str, patterns: tuple[str, ...] | Mapping[str, Any]) -> str | None:
    """The first pattern (fnmatch) that ``name`` matches, or None.

    >>> match("model.layers.3.mlp", ("*.mlp", "lm_head"))
    '*.mlp'
    """
    return next((p for p in patterns if p == name or fnmatch.fnmatchcase(name, p)), None)


@dataclass(frozen=True)
class Method(Spec):
    """Base of every pruning method. Subclasses set ``name`` and declare their options as fields."""

    name: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        """``{"method": name, "version": n, **options}``: what recipes, the CLI and manifests hold."""
        return {"method": self.name, "version": self.version, **self.fields_dict()}

    def to_value(self) -> dict[str, Any]:
        return self.to_dict()

    @staticmethod
    def from_dict(data: Mapping[str, Any], text: bool = False, where: str = "") -> Method:
        """Build the method ``data["method"]`` names, validating every option (``text``: CLI strings).

        >>> Method.from_dict({"method": "unstructured", "sparsity": "0.5"}, text=True).sparsity
        0.5
        """
        options = dict(data)
        name = options.pop("method", None)
        if not isinstance(name, str) or name not in METHODS:
            raise UnknownMethodError(f"{where + ': ' if where else ''}unknown method {name!r}; choose one of "
                                     f"{', '.join(sorted(METHODS))}")
        cls = METHODS[name]
        version = options.pop("version", cls.version)
        if not isinstance(version, int) or version > cls.version:
            raise InvalidParameterError(f"{name} version {version!r} is newer than this secateur reads "
                                        f"({cls.version}); upgrade secateur")
        return build(cls, options, text=text, where=where or name)


class Target(Spec):
    """A structured-pruning target: what fraction (or budget) of the dense model to keep."""

    key: ClassVar[str] = ""

    @classmethod
    def describe(cls) -> str:
        return "a target ({macs: F}, {params: F} or {latency: MS})"

    def to_value(self) -> dict[str, Any]:
        """``{key: first field}`` when the other fields hold their defaults, else ``{key: {field: value}}``."""
        fields = self.fields_dict()
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        first = next(iter(fields))
        plain = all(v == defaults[k] for k, v in fields.items() if k != first)
        return {self.key: fields[first] if plain else fields}

    @classmethod
    def coerce(cls, value: Any, text: bool = False) -> Target:
        """``{macs: 0.5}``, ``{params: 0.7}``, ``{params: {fraction: 0.7, embeddings: false}}``,
        ``{latency: {ms: 3}}``, ``"macs=0.5"``, ``"params=0.7,embeddings=false"`` or a bare number (a MACs
        fraction) into a target instance."""
        if isinstance(value, Target):
            return value
        if text and isinstance(value, str) and "=" in value:
            key, _, rest = value.partition("=")
            first, *options = (p.strip() for p in rest.split(","))
            value = {key.strip(): {"": first, **dict(o.split("=", 1) for o in options if "=" in o)}}
        if isinstance(value, Mapping) and len(value) == 1:
            key, inner = next(iter(value.items()))
            kinds = {t.key: t for t in (Macs, Params, Latency)}
            if key not in kinds:
                raise InvalidParameterError(f"unknown target {key!r}; choose macs, params or latency")
            target = kinds[key]
            first = next(iter(target.__dataclass_fields__))
            inner = dict(inner) if isinstance(inner, Mapping) else {first: inner}
            if "" in inner:
                inner[first] = inner.pop("")
            return build(target, inner, text=text)
        if cls is not Target:
            raise InvalidParameterError(f"{value!r} is not a {cls.key} target")
        raise InvalidParameterError(f"{value!r} is not a target; write {{macs: 0.5}}, {{params: 0.5}}, "
                                    "{latency: 3.0} or a number (a MACs fraction)")


@dataclass(frozen=True)
class Macs(Target):
    """Target: keep this fraction of the dense model's multiply-accumulates."""

    fraction: float
    key: ClassVar[str] = "macs"

    def validate(self) -> None:
        check_fraction("Macs.fraction", self.fraction, low_open=True, high_open=False)


@dataclass(frozen=True)
class Params(Target):
    """Target: keep this fraction of the dense model's parameters; ``embeddings=False`` counts only the
    parameters outside embedding tables (the "non-embedding parameters" of language-model papers).

    >>> Params(0.8, embeddings=False).to_value()
    {'params': {'fraction': 0.8, 'embeddings': False}}
    """

    fraction: float
    embeddings: bool = True
    key: ClassVar[str] = "params"

    def validate(self) -> None:
        check_fraction("Params.fraction", self.fraction, low_open=True, high_open=False)


@dataclass(frozen=True)
class Latency(Target):
    """Target: an onnxruntime latency budget in milliseconds for ``batch_size`` copies of the example."""

    ms: float
    batch_size: int = 32
    runs: int = 20
    key: ClassVar[str] = "latency"

    def validate(self) -> None:
        if self.ms <= 0 or self.batch_size < 1 or self.runs < 1:
            raise InvalidSparsityError(f"Latency(ms={self.ms}, batch_size={self.batch_size}, runs={self.runs}): "
                                       "all must be positive")
