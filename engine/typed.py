"""Build a config dataclass from JSON-like data, checking every field's type against its annotation.

Run folders (manifest.json), training configs and checkpoints are files a user (or a crash) can damage; a
`max_side: "abc"` or a list where an object belongs must surface as one StitchError naming the field, not
as a TypeError deep inside the pipeline. `from_dict(cls, data, where)` is the one place that does it:

* unknown keys are errors (a typo would otherwise silently do nothing);
* int fields take ints (not bools, not floats), float fields take ints or floats, finite only;
* `X | None` takes None; `tuple[int, int]` takes a list of the right length; `dict`/`list` take those;
* nested dataclasses recurse; `Path` fields take strings;
* `bounds` adds inclusive numeric ranges per dotted field name ("optim.steps_per_view": (0, None)).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from splat.errors import StitchError

T = TypeVar("T")
Bounds = dict[str, tuple[float | None, float | None]]


def from_dict(cls: type[T], data: object, where: str, bounds: Bounds | None = None, prefix: str = "") -> T:
    """An instance of dataclass `cls` from `data` or a StitchError `where: field ...; what to do`."""
    if not isinstance(data, dict):
        raise StitchError(f"{where}: {prefix or 'the config'} must be a JSON object, got {_kind(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in data if k not in fields)
    if unknown:
        names = ", ".join(prefix + k for k in unknown)
        raise StitchError(f"{where}: unknown field(s) {names}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        dotted = prefix + name
        values[name] = _coerce(hints[name], value, where, dotted, bounds or {})
    try:
        return cls(**values)
    except StitchError:
        raise
    except (TypeError, ValueError) as exc:  # a dataclass's own __post_init__ check
        raise StitchError(f"{where}: {exc}") from exc


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)  # fmt: skip


def _coerce(hint: Any, value: object, where: str, name: str, bounds: Bounds) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where, name, bounds)
            except StitchError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where, bounds, prefix=f"{name}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise StitchError(f"{where}: {name} must be true or false, got {_kind(value)} {_short(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise StitchError(f"{where}: {name} must be an integer, got {_kind(value)} {_short(value)}")
        _check_range(value, where, name, bounds)
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise StitchError(f"{where}: {name} must be a number, got {_kind(value)} {_short(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise StitchError(f"{where}: {name} must be a finite number, got {_short(value)}")
        _check_range(number, where, name, bounds)
        return number
    if hint is str:
        if not isinstance(value, str):
            raise StitchError(f"{where}: {name} must be a string, got {_kind(value)} {_short(value)}")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value or "\0" in value:
            raise StitchError(f"{where}: {name} must be a file path (a string), got {_kind(value)}")
        return Path(value)
    if hint is tuple:  # a bare `tuple`: any list (JSON has no tuples)
        if not isinstance(value, (list, tuple)):
            raise StitchError(f"{where}: {name} must be a list, got {_kind(value)}")
        return tuple(value)
    if origin is tuple and len(typing.get_args(hint)) == 2 and typing.get_args(hint)[1] is Ellipsis:
        if not isinstance(value, (list, tuple)):
            raise StitchError(f"{where}: {name} must be a list, got {_kind(value)}")
        item = typing.get_args(hint)[0]
        return tuple(_coerce(item, v, where, f"{name}[{i}]", bounds) for i, v in enumerate(value))
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise StitchError(f"{where}: {name} must be a list of {len(args)} values, got {_short(value)}")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_coerce(a, v, where, f"{name}[{i}]", bounds) for i, (a, v) in pairs)
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise StitchError(f"{where}: {name} must be an object, got {_kind(value)}")
        return value
    if hint is list or origin is list:
        if not isinstance(value, list):
            raise StitchError(f"{where}: {name} must be a list, got {_kind(value)}")
        return value
    return value  # an annotation this helper does not know: left to the dataclass


def _check_range(value: float, where: str, name: str, bounds: Bounds) -> None:
    low, high = bounds.get(name, (None, None))
    if (low is not None and value < low) or (high is not None and value > high):
        span = f"{'' if low is None else low}..{'' if high is None else high}"
        raise StitchError(f"{where}: {name} must be in {span}, got {_short(value)}")


def _short(value: object, limit: int = 40) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return "an integer with more than 30 digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # int-str digit limit, deep nesting
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."
