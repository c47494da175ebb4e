"""One schema for every method, target and criterion: the type hints of their dataclass fields.

The same hints check an object built in Python (``Structured(target="0.5")`` is a named error),
coerce one read from a YAML recipe (lists become tuples, ``{macs: 0.5}`` becomes ``Macs(0.5)``) and
parse one typed on the command line (``"0.5"``, ``"heads,channels"``, ``"conv1=0.5,conv2=0.25"``).
So every option exists in Python, recipes and the CLI, and there is no second list to keep in sync.

A class in a hint may take part by defining ``coerce(value, text) -> instance`` (a classmethod) and
``to_value(self)``: targets and criteria do.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, Union, get_args, get_origin

from .errors import InvalidParameterError


class ClaimedValueError(InvalidParameterError):
    """Raised by a class's ``coerce`` for a value it recognises as its own but finds invalid (an unknown
    option of a named profile, say): reported as it is, instead of trying the hint's other members."""


class Spec:
    """Base of frozen dataclasses checked by their hints (call :func:`check_fields` in ``__post_init__``)."""

    def __post_init__(self) -> None:
        check_fields(self)
        self.validate()

    def validate(self) -> None:
        """Checks across fields, after each field's type has been checked."""

    def fields_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-ready data (what ``build`` reads back)."""
        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


PLURAL = {"a number": "numbers", "a string": "strings", "an integer": "integers"}


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of a dataclass's fields."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def _members(hint: Any) -> tuple[Any, ...]:
    return get_args(hint) if get_origin(hint) in (Union, types.UnionType) else (hint,)


def describe(hint: Any) -> str:
    """A human description of what a hint accepts.

    >>> describe(tuple[Literal["a", "b"], ...])
    "a list of 'a', 'b'"
    """
    parts = [_describe_one(h) for h in _members(hint) if h is not type(None)]
    return " or ".join(dict.fromkeys(parts))


def _describe_one(hint: Any) -> str:
    origin = get_origin(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in get_args(hint))
    if origin is tuple:
        inner = describe(get_args(hint)[0])
        return f"a list of {PLURAL.get(inner, inner.removeprefix('one of '))}"
    if origin is dict:
        inner = describe(get_args(hint)[1])
        return f"a mapping of names to {PLURAL.get(inner, inner)}"
    if hasattr(hint, "describe"):
        return hint.describe()
    return {float: "a number", int: "an integer", bool: "true or false", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _is(value: Any, hint: Any) -> bool:
    """Strict check of an already-built value against one hint (no conversion)."""
    origin = get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_is(value, h) for h in get_args(hint))
    if hint is type(None):
        return value is None
    if origin is Literal:
        return isinstance(value, str | int | bool) and value in get_args(hint)
    if origin is tuple:
        return isinstance(value, tuple) and all(_is(v, get_args(hint)[0]) for v in value)
    if origin is dict:
        key, val = get_args(hint)
        return isinstance(value, dict) and all(_is(k, key) and _is(v, val) for k, v in value.items())
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_fields(obj: Any) -> None:
    """Raise :class:`InvalidParameterError` naming the first field whose value does not fit its hint."""
    for name, hint in hints(type(obj)).items():
        value = getattr(obj, name)
        if not _is(value, hint):
            raise InvalidParameterError(f"{type(obj).__name__}: {name}={value!r} is not valid; expected "
                                        f"{describe(hint)}")


def _from_text(text: str, hint: Any) -> Any:
    """Parse a command-line string for one (non-union) hint."""
    origin = get_origin(hint)
    if origin is tuple:
        return tuple(p.strip() for p in text.split(",") if p.strip())
    if origin is dict:
        pairs = [p.split("=", 1) for p in text.split(",") if p.strip()]
        if any(len(p) != 2 for p in pairs):
            raise ValueError(f"{text!r} is not NAME=VALUE[,NAME=VALUE...]")
        return {k.strip(): v.strip() for k, v in pairs}
    if hint is bool:
        if text.lower() not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError(f"{text!r} is not true or false")
        return text.lower() in ("true", "yes", "1")
    try:
        return {int: int, float: float}.get(hint, str)(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {describe(hint)}") from None


def _coerce_one(value: Any, hint: Any, text: bool) -> Any:
    origin = get_origin(hint)
    coerce = getattr(hint, "coerce", None) if isinstance(hint, type) else None
    if coerce is not None:
        return coerce(value, text)
    if text and isinstance(value, str):
        value = _from_text(value, hint)
    if origin is tuple and isinstance(value, list | tuple):
        return tuple(_coerce_one(v, get_args(hint)[0], text) for v in value)
    if origin is dict and isinstance(value, Mapping):
        return {str(k): _coerce_one(v, get_args(hint)[1], text) for k, v in value.items()}
    if hint is float and isinstance(value, int | str) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, str):
        return int(value)
    if not _is(value, hint):
        raise ValueError(f"{value!r} is not {describe(hint)}")
    return value


def coerce(value: Any, hint: Any, text: bool = False) -> Any:
    """Convert recipe data (or, with ``text``, a command-line string) to a value of ``hint``."""
    if _is(value, hint) and not text:
        return value
    errors = []
    # classes that coerce themselves first, a plain string last: on the command line "0.5" is a number first
    members = sorted(_members(hint), key=lambda h: (not hasattr(h, "coerce"), h is str))
    for member in members:
        if member is type(None):
            if value is None or (text and str(value).lower() in ("none", "null")):
                return None
            continue
        try:
            return _coerce_one(value, member, text)
        except ClaimedValueError:
            raise
        except (ValueError, TypeError, InvalidParameterError) as err:
            errors.append(str(err))
    raise InvalidParameterError(errors[-1] if len(errors) == 1 else f"{value!r} is not {describe(hint)}")


def build(cls: type, data: Mapping[str, Any], text: bool = False, where: str = "") -> Any:
    """Make ``cls(**data)``, checking names (unknown ones list the valid ones) and coercing each value."""
    valid = hints(cls)
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise InvalidParameterError(f"{where or cls.__name__}: unknown option {unknown[0]!r}; valid options: "
                                    f"{', '.join(valid) or 'none'}")
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING]
    absent = [name for name in required if name not in data]
    if absent:
        raise InvalidParameterError(f"{where or cls.__name__}: the option {absent[0]!r} is required")
    kwargs = {}
    for name, value in data.items():
        try:
            kwargs[name] = coerce(value, valid[name], text)
        except InvalidParameterError as err:
            raise InvalidParameterError(f"{where or cls.__name__}: {name}: {err}") from None
    return cls(**kwargs)


def to_plain(value: Any) -> Any:
    """JSON-ready form of a field value (tuples as lists, specs through ``to_value``)."""
    if hasattr(value, "to_value"):
        return value.to_value()
    if isinstance(value, tuple | list):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
