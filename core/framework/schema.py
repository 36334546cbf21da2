"""Turn parsed YAML into typed, frozen dataclasses, or fail with every problem named.

The config files are validated once, at the edge. A typo must not pass
silently and a bad value must not surface later as a ``KeyError``, so
:func:`build` checks every key of a mapping against the dataclass it should
become and collects all problems before raising one :class:`ConfigError`.
Each problem names the file, the dotted key, the bad value and what is
allowed.

Field metadata understood by :func:`build` (see :func:`spec`):
``minimum``/``maximum`` (inclusive bounds), ``exclusive_minimum``,
``choices`` and ``help`` (what the value means, appended to errors).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import io
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

Range = tuple[float, float]
"""``[min, max]`` in YAML: two non-negative numbers with min <= max."""


class ConfigError(ValueError):
    """One or more problems in a configuration file.

    Attributes
    ----------
    problems : list of str
        One line per problem, each naming the file and key.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration ({len(self.problems)} problem(s)):\n{lines}")


def spec(default: Any = dataclasses.MISSING, *, minimum=None, maximum=None,
         exclusive_minimum=None, choices=None, help: str = "") -> Any:
    """A dataclass field carrying validation metadata for :func:`build`."""
    metadata = {"minimum": minimum, "maximum": maximum, "exclusive_minimum": exclusive_minimum,
                "choices": choices, "help": help}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata)
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class Problems:
    """Collects problems found while validating one file."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        """Record a problem with the dotted ``key`` it concerns."""
        where = f"key '{key}'" if key else "top level"
        self.items.append(f"{self.source}: {where}: {message}")

    def raise_if_any(self) -> None:
        """Raise one :class:`ConfigError` listing every problem recorded."""
        if self.items:
            raise ConfigError(self.items)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _join(parent: str, child: Any) -> str:
    return f"{parent}.{child}" if parent else str(child)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp == Range:
        return "a range [min, max] of two non-negative numbers"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None)) + " or null"
    if origin in (list, tuple):
        item = _type_name(get_args(tp)[0])
        plural = {"a number": "numbers", "an integer": "integers", "a string": "strings"}.get(item, item)
        return f"a list of {plural}"
    if origin is dict:
        return f"a mapping of names to {_type_name(get_args(tp)[1])}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            dt.date: "a date (YYYY-MM-DD)"}.get(tp, str(tp))


def build(cls: type, data: Any, problems: Problems, key: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; record problems instead of raising.

    Returns the instance, or ``None`` when the mapping itself is unusable.
    """
    if not isinstance(data, dict):
        problems.add(key, f"expected a mapping with keys {', '.join(_field_names(cls))}, got {_show(data)}")
        return None
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    for unknown in sorted(set(map(str, data)) - set(fields)):
        close = difflib.get_close_matches(unknown, list(fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.add(_join(key, unknown), f"unknown key{hint}; allowed keys: {', '.join(fields)}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        child = _join(key, name)
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                help_text = f" ({f.metadata['help']})" if f.metadata.get("help") else ""
                problems.add(child, f"missing; expected {_type_name(hints[name])}{help_text}")
            continue
        values[name] = convert(hints[name], data[name], problems, child, f.metadata)
    if len(problems.items) and any(v is _INVALID for v in values.values()):
        return None
    try:
        return cls(**{k: v for k, v in values.items() if v is not _INVALID})
    except TypeError:
        return None  # a missing field was already reported


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.init]


_INVALID = object()


def convert(tp: Any, value: Any, problems: Problems, key: str, meta: dict | None = None) -> Any:
    """Convert one YAML value to type ``tp``, checking bounds from ``meta``."""
    meta = meta or {}
    before = len(problems.items)
    result = _convert(tp, value, problems, key, meta)
    if len(problems.items) > before:
        return _INVALID
    return result


def _fail(problems: Problems, key: str, value: Any, expected: str, meta: dict) -> object:
    help_text = f" ({meta['help']})" if meta.get("help") else ""
    problems.add(key, f"{_show(value)} is not valid; expected {expected}{help_text}")
    return _INVALID


def _convert(tp: Any, value: Any, problems: Problems, key: str, meta: dict) -> Any:
    origin = get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        return _convert(options[0], value, problems, key, meta)
    if dataclasses.is_dataclass(tp):
        built = build(tp, value, problems, key)
        return _INVALID if built is None else built
    if tp == Range:
        return _convert_range(value, problems, key, meta)
    if origin is Literal:
        if value not in get_args(tp):
            return _fail(problems, key, value, _type_name(tp), meta)
        return value
    if origin in (list, tuple):
        if not isinstance(value, list):
            return _fail(problems, key, value, _type_name(tp), meta)
        item_type = get_args(tp)[0]
        items = [convert(item_type, v, problems, f"{key}[{i}]", meta) for i, v in enumerate(value)]
        return tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            return _fail(problems, key, value, _type_name(tp), meta)
        value_type = get_args(tp)[1]
        return {str(k): convert(value_type, v, problems, _join(key, k), meta) for k, v in value.items()}
    return _convert_scalar(tp, value, problems, key, meta)


def _convert_range(value: Any, problems: Problems, key: str, meta: dict) -> Any:
    ok = (isinstance(value, list) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))
    if not ok:
        return _fail(problems, key, value, _type_name(Range), meta)
    low, high = float(value[0]), float(value[1])
    if low < 0 or high < 0:
        problems.add(key, f"{_show(value)} is a negative range; both ends must be >= 0")
        return _INVALID
    if low > high:
        problems.add(key, f"{_show(value)}: minimum {value[0]} is above maximum {value[1]}; write [min, max]")
        return _INVALID
    for bound in (low, high):
        _check_bounds(bound, problems, key, meta, shown=value)
    return (low, high)


def _convert_scalar(tp: Any, value: Any, problems: Problems, key: str, meta: dict) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            return _fail(problems, key, value, "true or false", meta)
        result: Any = value
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            return _fail(problems, key, value, "an integer", meta)
        result = value
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return _fail(problems, key, value, "a number", meta)
        result = float(value)
    elif tp is str:
        if not isinstance(value, str) or not value.strip():
            return _fail(problems, key, value, "a non-empty string", meta)
        result = value
    elif tp is dt.date:
        if isinstance(value, dt.datetime):
            result = value.date()
        elif isinstance(value, dt.date):
            result = value
        else:
            try:
                result = dt.date.fromisoformat(str(value))
            except ValueError:
                return _fail(problems, key, value, "a date (YYYY-MM-DD)", meta)
    else:  # pragma: no cover - a schema bug, not a user error
        raise TypeError(f"unsupported config type {tp!r} at {key}")
    choices = meta.get("choices")
    if choices is not None and result not in choices:
        problems.add(key, f"{_show(value)} is not allowed; allowed values: {', '.join(map(str, choices))}")
        return _INVALID
    if isinstance(result, (int, float)) and not isinstance(result, bool):
        _check_bounds(result, problems, key, meta, shown=value)
    return result


def _check_bounds(number: float, problems: Problems, key: str, meta: dict, shown: Any) -> None:
    low, high, exclusive = meta.get("minimum"), meta.get("maximum"), meta.get("exclusive_minimum")
    help_text = f" ({meta['help']})" if meta.get("help") else ""
    if low is not None and number < low:
        problems.add(key, f"{_show(shown)} is below the minimum {low}{help_text}")
    elif exclusive is not None and number <= exclusive:
        problems.add(key, f"{_show(shown)} must be greater than {exclusive}{help_text}")
    elif high is not None and number > high:
        problems.add(key, f"{_show(shown)} is above the maximum {high}{help_text}")


def check_sums_to_one(weights: dict[str, float], problems: Problems, key: str,
                      tolerance: float = 1e-6) -> None:
    """Record a problem unless the values of ``weights`` sum to 1."""
    total = sum(weights.values())
    if abs(total - 1.0) > tolerance:
        problems.add(key, f"values sum to {total:.6g}; they must sum to 1 "
                          f"(e.g. scale each by {1 / total:.4g})" if total > 0 else
                     f"values sum to {total:.6g}; they must sum to 1")


def suggest(name: str, allowed: list[str]) -> str:
    """A ``(did you mean ...?)`` hint for a misspelt name, or ``''``."""
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys and reports impossible dates with their line."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"key {key!r} appears twice (first on line {seen[key].line + 1}); a later value would "
                    f"silently replace the earlier one: keep one", key_node.start_mark)
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node):
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a valid date ({exc}); write YYYY-MM-DD",
                node.start_mark) from None


_StrictLoader.add_constructor("tag:yaml.org,2002:timestamp", _StrictLoader.construct_yaml_timestamp)


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, turning a missing or malformed file into a :class:`ConfigError`.

    Duplicate keys are errors (the later value would silently win), and so
    are impossible dates; both are reported with their line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found (looked for {path.resolve()}); check the path"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot be read ({exc.strerror}); give the path of a YAML file"]) from None
    stream = io.StringIO(text)
    stream.name = str(path)  # PyYAML names the file in its error marks
    try:
        return yaml.load(stream, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {exc}"]) from None
