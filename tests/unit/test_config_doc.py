"""The configuration reference is generated from the code and must stay in step with it."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import yaml

from mpitrack.config import Config, config_from_dict
from mpitrack.config_doc import annotated_defaults, field_help, optional_section

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def sections(cls: type) -> list[type]:
    found = [cls]
    for hint in typing.get_type_hints(cls).values():
        inner = hint if dataclasses.is_dataclass(hint) else optional_section(hint)
        if inner is not None:
            found += sections(inner)
    return found


def test_every_config_key_is_documented_in_its_class() -> None:
    for cls in sections(Config):
        names = {f.name for f in dataclasses.fields(cls)} - {"source"}
        missing = names - set(field_help(cls))
        assert not missing, f"{cls.__name__}: document {sorted(missing)} in its docstring"


def test_the_annotated_defaults_are_a_valid_config() -> None:
    config = config_from_dict(yaml.safe_load(annotated_defaults()))
    assert config.frames.frames_per_scan == 1440
    assert config.tracking == Config.__dataclass_fields__["tracking"].default_factory()


def test_docs_configuration_md_holds_the_current_defaults() -> None:
    assert annotated_defaults() in DOC.read_text(), (
        "docs/configuration.md is out of date: replace its yaml block with the output of "
        "`mpitrack config defaults`"
    )
