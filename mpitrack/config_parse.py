"""Plain data (parsed YAML) into typed config dataclasses, with errors that name the key.

The generic half of the config loader: the experiment config (config.py) and
the detector's files (detector/instrument.py, detector/regions.py) are read
with it, so every file gives the same kind of error: the file, the key path,
and what is wrong (``configs/x.yaml: regions[3].frames: expected a list of 2,
got 3``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml

from mpitrack.errors import ConfigError

# Fields that describe where a config came from, never read from a file.
_NOT_FROM_FILE = {"source"}


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error: YAML
    says keys are unique, and PyYAML would silently keep the last value."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            seen = first_line.get(key)
        except TypeError:  # an unhashable key: PyYAML reports it below
            continue
        line = key_node.start_mark.line + 1
        if seen is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {line}, first at line {seen})", None
            )
        first_line[key] = line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | os.PathLike[str], kind: str) -> Any:
    """A YAML file's content; a missing, unreadable or malformed file is a ConfigError
    naming the file (kind: what the file is, for the message)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(source, "", f"no such {kind} file") from None
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read: {exc.strerror}") from None
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, "", f"malformed YAML: {where}{problem}") from None


def kind_of(value: Any) -> str:
    """What a value is, as an error message says it ("a list", "null")."""
    if value is None:
        return "null"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def build_section(cls: type, raw: Any, source: str, path: str) -> Any:
    """A config dataclass from plain data; errors name source and key path."""
    if not isinstance(raw, Mapping):
        raise ConfigError(source, path or "<top>", f"expected a mapping, got {kind_of(raw)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _NOT_FROM_FILE}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = (
                f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(fields)}"
            )
            raise ConfigError(source, _join(path, str(key)), f"unknown key{hint}")
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key_path = _join(path, name)
        if name in raw:
            values[name] = _convert(hints[name], raw[name], source, key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, key_path, "is required")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, path or "<top>", str(exc)) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _convert(hint: Any, value: Any, source: str, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, source, path)
    if value is None:
        raise ConfigError(source, path, "must not be null")
    if origin is Literal:
        if value not in args:
            choices = ", ".join(repr(a) for a in args)
            raise ConfigError(source, path, f"{value!r} is not one of {choices}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(source, path, f"expected a list, got {kind_of(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, source, f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(source, path, f"expected a list of {len(args)}, got {len(value)}")
        return tuple(
            _convert(a, v, source, f"{path}[{i}]")
            for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if dataclasses.is_dataclass(hint):
        return build_section(hint, value, source, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, path, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, path, f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(source, path, f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a string, got {value!r}")
        return value
    if hint is Path:
        if not isinstance(value, str):
            raise ConfigError(source, path, f"expected a path, got {value!r}")
        return Path(value)
    raise ConfigError(source, path, f"unsupported type {hint!r} (a bug in mpitrack)")
