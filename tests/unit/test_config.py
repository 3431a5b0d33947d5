"""Config loading: layering, validation messages that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpitrack.config import load_config
from mpitrack.errors import ConfigError
from mpitrack.urls import redact_url

MINIMAL = """
run: demo
frames: {frames_per_scan: 1440, shape: [35, 35]}
scans: {first: 0, last: 9}
regions:
  - {id: 0, frames: [100, 110]}
  - {id: 1, frames: [1437, 7], description: wraps}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "x.yaml"
    path.write_text(text)
    return path


def test_minimal_config_loads_with_typed_values_and_resolved_paths(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.run == "demo"
    assert config.frames.shape == (35, 35)
    assert config.regions[1].frames == (1437, 7)
    assert config.frames.directory == tmp_path / "frames"
    assert config.workdir == (tmp_path / "runs/default").resolve()
    assert config.scans.last == 9
    assert config.runtime.on_failure == "skip"


def test_environment_overrides_file_and_overrides_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    env = {
        "MPITRACK_DATABASE_URL": "postgresql://db.example/x",
        "MPITRACK_SCANS__LAST": "4",
        "MPITRACK_RUNTIME__ON_FAILURE": "abort",
        "UNRELATED": "1",
    }
    config = load_config(path, env=env)
    assert config.database.url == "postgresql://db.example/x"
    assert config.scans.last == 4
    assert config.runtime.on_failure == "abort"
    config = load_config(path, env=env, overrides={"scans.last": 2})
    assert config.scans.last == 2


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (
            MINIMAL.replace("[100, 110]", "[100, 1500]"),
            "regions[0].frames",
            "end 1500 is outside 0..1439",
        ),
        (MINIMAL + "runtme: {}\n", "runtme", "did you mean 'runtime'"),
        (
            MINIMAL.replace("frames_per_scan: 1440", "frames_per_scan: many"),
            "frames.frames_per_scan",
            "expected an integer",
        ),
        (MINIMAL.replace("last: 9", "last: -1"), "scans.last", "before scans.first"),
        (MINIMAL.replace("{id: 1,", "{id: 0,"), "regions[1].id", "used twice"),
        (MINIMAL + "runtime: {on_failure: retry}\n", "runtime.on_failure", "not one of"),
        (MINIMAL + "tracking: {n_scn: 3}\n", "tracking.n_scn", "did you mean 'n_scan'"),
        (MINIMAL.replace("shape: [35, 35]", "shape: [35]"), "frames.shape", "list of 2"),
        (MINIMAL + "database: {url: 'postgresql://u:hunter2@h/db'}\n", "database.url", "password"),
    ],
)
def test_bad_values_name_file_key_and_problem(
    tmp_path: Path, text: str, key: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text), env={})
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'x.yaml'}: {key}: "), message
    assert fragment in message
    assert "hunter2" not in message


def test_missing_file_and_malformed_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml", env={})
    with pytest.raises(ConfigError, match=r"malformed YAML: line \d+, column \d+"):
        load_config(write(tmp_path, "run: x\nregions: [\n"), env={})
    with pytest.raises(ConfigError, match="regions: is required"):
        load_config(write(tmp_path, "run: x\n"), env={})


def test_redact_url_hides_passwords_in_urls_and_dsns() -> None:
    assert redact_url("postgresql://u:pw@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact_url("host=h password=pw dbname=d") == "host=h password=*** dbname=d"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
