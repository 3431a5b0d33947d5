"""Configuration as people read it: every key with its default and its meaning.

The text comes from the config dataclasses themselves (their defaults and the
``name: meaning`` lines of their docstrings), so `mpitrack config defaults`
and docs/configuration.md cannot drift from the code; a test checks the doc.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from mpitrack.config import Config
from mpitrack.urls import redact_url

_FIELD_LINE = re.compile(r"^(\w+): (.*)$")
_PLACEHOLDERS = {
    "run": "my-experiment",
    "regions": [{"id": 0, "frames": [100, 110]}],
    "instrument": "instrument.yaml",
    "regions_file": "regions.yaml",
}


def field_help(cls: type) -> dict[str, str]:
    """``name: meaning`` entries of a dataclass docstring (continuation lines indented)."""
    doc = textwrap.dedent((cls.__doc__ or "").split("\n", 1)[-1])
    entries: dict[str, str] = {}
    current: str | None = None
    for line in doc.splitlines():
        match = _FIELD_LINE.match(line)
        if match and match.group(1) in {f.name for f in dataclasses.fields(cls)}:
            current = match.group(1)
            entries[current] = match.group(2).strip()
        elif current and line.startswith(" ") and line.strip():
            entries[current] += " " + line.strip()
        else:
            current = None
    return entries


def optional_section(hint: Any) -> type | None:
    """The dataclass of an ``X | None`` section, else None."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _section_lines(cls: type, indent: str) -> list[str]:
    lines: list[str] = []
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        meaning = helps.get(f.name)
        if meaning:
            for wrapped in textwrap.wrap(meaning, 88 - len(indent)):
                lines.append(f"{indent}# {wrapped}")
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            lines.append(f"{indent}{f.name}:")
            lines.extend(_section_lines(hint, indent + "  "))
            continue
        optional = optional_section(hint)
        if optional is not None:
            # An optional section: off by default, its keys shown commented out.
            lines.append(f"{indent}{f.name}: null")
            lines.append(f"{indent}# {f.name}:")
            lines.extend(
                f"{indent}# {line[len(indent) :]}" if line.strip() else line
                for line in _section_lines(optional, indent + "  ")
            )
            continue
        if f.default is not dataclasses.MISSING:
            value = _plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            value = _plain(f.default_factory())
        else:
            value = _PLACEHOLDERS[f.name]
        dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000)
        text = dumped.strip()[1:-1] if dumped.startswith("{") else dumped.strip()
        suffix = (
            ""
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            else "   # required"
        )
        lines.append(f"{indent}{text}{suffix}")
    return lines


def annotated_defaults() -> str:
    """A complete config with every default, each key preceded by its meaning."""
    return "\n".join(_section_lines(Config, "")) + "\n"


def resolved_yaml(config: Config) -> str:
    """The config as loaded (file + environment + flags), every default filled in;
    passwords (from the environment: files may not hold them) shown as ***."""
    data = dataclasses.asdict(config)
    data.pop("source")
    for section in ("database", "redis"):
        if data[section]["url"] is not None:
            data[section]["url"] = redact_url(data[section]["url"])

    def plain(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return _plain(value)

    return f"# resolved from {config.source}\n" + yaml.safe_dump(
        plain(data), sort_keys=False, default_flow_style=None
    )
