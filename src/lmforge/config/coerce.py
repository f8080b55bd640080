"""Turn raw config values (YAML scalars or command-line strings) into the schema's types.

YAML reads ``1e-4`` as a string and the command line gives only strings, so every value is
checked against its field's annotation; a mismatch becomes one line naming the key, the
value and the type that was expected.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any, Literal, TypeVar, overload

from lmforge.errors import ConfigError

_NULL_WORDS = {"null", "~", ""}  # YAML's spellings of null
_NONE_WORDS = _NULL_WORDS | {"none"}  # "none" means null only where a string is not allowed
_TRUE_WORDS = {"true", "yes", "on", "1"}
_FALSE_WORDS = {"false", "no", "off", "0"}


T = TypeVar("T")
_TYPE_WORDS: dict[object, str] = {
    bool: "a boolean (true/false)",
    int: "an integer",
    float: "a number",
    str: "a string",
}


class _Mismatch(Exception):
    pass


@overload
def coerce_value(key: str, value: object, annotation: type[T]) -> T: ...
@overload
def coerce_value(key: str, value: object, annotation: object) -> object: ...
def coerce_value(key: str, value: object, annotation: object) -> object:
    """Return ``value`` converted to ``annotation`` or raise ConfigError naming ``key``.

    ``annotation`` is a type or a typing form (``int | None``, ``Literal[...]``, ``list[str]``).
    """
    try:
        return _coerce(value, annotation)
    except _Mismatch:
        raise ConfigError(f"config key '{key}': value {value!r} is not {describe_type(annotation)}") from None


def describe_type(annotation: object) -> str:
    """A human phrase for an annotation: 'an integer', 'one of: lora, freeze, full', ..."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        parts = [describe_type(a) for a in args if a is not type(None)]
        text = " or ".join(dict.fromkeys(parts))
        return text + (" (or null)" if type(None) in args else "")
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (list, tuple):
        inner = describe_type(args[0]) if args else "values"
        return f"a comma-separated list ({inner.removeprefix('a ').removeprefix('an ')} each)"
    if origin is dict or annotation is dict:
        return "a mapping (a YAML mapping or a JSON object string)"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of: " + ", ".join(str(m.value) for m in annotation)
    return _TYPE_WORDS.get(annotation, f"of type {getattr(annotation, '__name__', annotation)}")


def _coerce(value: object, annotation: object) -> object:
    if annotation is Any or annotation is object:  # unresolved annotations: taken as given
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)

    if origin in (typing.Union, types.UnionType):
        if type(None) in args and (
            value is None
            or (
                isinstance(value, str)
                and value.strip().lower() in (_NULL_WORDS if str in args else _NONE_WORDS)
            )
        ):
            return None
        # try the most specific alternatives first so "5" prefers int over str
        prefer_list = isinstance(value, list | tuple) or (isinstance(value, str) and "," in value)
        for alt in sorted(
            (a for a in args if a is not type(None)), key=lambda a: _specificity(a, prefer_list)
        ):
            try:
                return _coerce(value, alt)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and str(choice) == value):
                return choice
        raise _Mismatch
    if origin in (list, tuple) or annotation in (list, tuple):
        inner = args[0] if args else Any
        if isinstance(value, str):
            items: list[object] = [p.strip() for p in value.split(",") if p.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            items = [value]
        return [_coerce(v, inner) for v in items]
    if origin is dict or annotation is dict:
        if isinstance(value, dict):
            return value
        if isinstance(value, str):
            try:
                parsed = json.loads(value)
            except json.JSONDecodeError:
                raise _Mismatch from None
            if isinstance(parsed, dict):
                return parsed
        raise _Mismatch
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        raw = value.value if isinstance(value, enum.Enum) else value
        for member in annotation:
            if member.value == raw or str(member.value) == str(raw):
                return member.value
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS | _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise _Mismatch
    if annotation is int:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            text = value.strip()
            try:
                return int(text)
            except ValueError:
                try:
                    number = float(text)
                except ValueError:
                    raise _Mismatch from None
                if number.is_integer():
                    return int(number)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, bool):
            raise _Mismatch
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                raise _Mismatch from None
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool | int | float):
            return str(value)
        raise _Mismatch
    if annotation is type(None):
        if _is_none(value):
            return None
        raise _Mismatch
    # anything else (custom classes in TrainingArguments): pass through untouched
    return value


def _is_none(value: object) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE_WORDS)


def _specificity(annotation: object, prefer_list: bool) -> int:
    """Order union alternatives: narrow scalars first; lists before strings only for a,b values."""
    if typing.get_origin(annotation) in (list, tuple) or annotation in (list, tuple):
        return 4 if prefer_list else 10
    order = {bool: 0, int: 1, float: 2}
    if annotation in order:
        return order[annotation]
    if typing.get_origin(annotation) is Literal:
        return 0
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return 0
    if annotation is str:
        return 9
    return 5
