"""Config loading: layering, validation messages that name file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpitrack.config import load_config
from mpitrack.errors import ConfigError
from mpitrack.urls import redact_text, redact_url

MINIMAL = """
run: demo
scans: {first: 0, last: 9}
regions:
  - {id: 0, frames: [100, 110]}
  - {id: 1, frames: [1437, 7], description: wraps}
frames:
  frames_per_scan: 1440
  shape: [35, 35]
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
        (MINIMAL + "redis: {reconnect_seconds: -1}\n", "redis.reconnect_seconds", ">= 0"),
        (MINIMAL + "process: {max_slots: 0}\n", "process.max_slots", ">= 1"),
        (MINIMAL + "process: {lease: 0}\n", "process.lease", "> 0"),
        (MINIMAL + "process: {max_attempts: 0}\n", "process.max_attempts", ">= 1"),
        (
            MINIMAL.replace("shape: [35, 35]", "shape: [35, 35]\n  mask: {values: [.nan]}"),
            "frames.mask.values[0]",
            "NaN is always masked",
        ),
        (
            MINIMAL.replace("shape: [35, 35]", "shape: [35, 35]\n  mask: {file: 'm_{scan}.npy'}"),
            "frames.mask.file",
            "only {region}",
        ),
        # Passwords in any spelling a driver accepts are refused in a file.
        (
            MINIMAL + "database: {url: 'postgresql://u@h/db?password=hunter2'}\n",
            "database.url",
            "password",
        ),
        (MINIMAL + "database: {url: 'host=h password=hunter2'}\n", "database.url", "password"),
        (MINIMAL + "redis: {url: 'redis://h:6379/0?password=hunter2'}\n", "redis.url", "password"),
        # Frame patterns that cannot name a frame fail at load, not in the run.
        (
            MINIMAL + "  pattern: 'r{region}_s{scan}.npy'\n",
            "frames.pattern",
            "lacks field(s) {frame}",
        ),
        (MINIMAL + "  pattern: 're:(?P<region>[0-9+'\n", "frames.pattern", "does not compile"),
        # Numbers the database cannot hold (integer columns) are refused at load.
        (MINIMAL.replace("{id: 1,", "{id: 2147483648,"), "regions[1].id", "2147483647"),
        (MINIMAL.replace("last: 9", "last: 2147483648"), "scans.last", "2147483647"),
        (MINIMAL + "runtime: {idle_timeout: -5}\n", "runtime.idle_timeout", "> 0"),
        (MINIMAL + "database: {url: 'postgresql://h:99999/db'}\n", "database.url", "port 99999"),
        (MINIMAL + "redis: {url: 'redis://h:0/0'}\n", "redis.url", "port 0"),
        (MINIMAL + "redis: {url: 'http://h:6379'}\n", "redis.url", "redis://"),
        (MINIMAL.replace("run: demo", "run: public"), "run", "reserved"),
        (MINIMAL.replace("run: demo", "run: " + "x" * 64), "run", "63"),
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


def test_frame_mask_defaults_to_the_uint32_marker_and_resolves_its_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.frames.mask.values == (4294967295.0,) and config.frames.mask.file is None
    text = MINIMAL.replace(
        "shape: [35, 35]", "shape: [35, 35]\n  mask: {values: [-1, 65535], file: 'm_{region}.npy'}"
    )
    config = load_config(write(tmp_path, text), env={})
    assert config.frames.mask.values == (-1.0, 65535.0)
    assert config.frames.mask.file == tmp_path / "m_{region}.npy"


def test_duplicate_keys_are_refused_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "scans: {first: 0, last: 3}\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'scans' \(line \d+, first at line 3\)"):
        load_config(path, env={})
    nested = MINIMAL.replace("scans: {first: 0, last: 9}", "scans: {first: 0, last: 9, last: 4}")
    with pytest.raises(ConfigError, match="duplicate key 'last'"):
        load_config(write(tmp_path, nested), env={})


@pytest.mark.parametrize(
    ("name", "value", "key"),
    [
        ("MPITRACK_TRACKING__N_SCAN", "-1", "tracking"),
        ("MPITRACK_SCANS__LAST", "many", "scans.last"),
        ("MPITRACK_DATABASE_URL", "postgresql://h:70000/db", "database.url"),
        ("MPITRACK_RUN", "pg_x", "run"),
    ],
)
def test_an_error_from_the_environment_names_the_variable(
    tmp_path: Path, name: str, value: str, key: str
) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={name: value})
    message = str(caught.value)
    assert message.startswith(f"environment {name} (over {path}): {key}: "), message


def test_an_error_from_the_command_line_names_it(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, overrides={"scans.last": 2**31})
    assert str(caught.value).startswith(f"command line (over {path}): scans.last: ")


def test_a_password_in_the_environment_is_accepted(tmp_path: Path) -> None:
    env = {"MPITRACK_DATABASE_URL": "postgresql://u@h/db?password=hunter2"}
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert config.database.url == env["MPITRACK_DATABASE_URL"]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5/db", "postgresql://u:***@h:5/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        (
            "postgresql://u@h/db?password=pw&sslmode=require",
            "postgresql://u@h/db?password=***&sslmode=require",
        ),
        (
            "postgresql://u@h/db?sslmode=require&PASSWORD=p%25w",
            "postgresql://u@h/db?sslmode=require&PASSWORD=***",
        ),
        ("postgresql://u:p%40w@h/db", "postgresql://u:***@h/db"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("redis://h:6379/0?password=pw", "redis://h:6379/0?password=***"),
        ("unix:///tmp/r.sock?password=pw", "unix:///tmp/r.sock?password=***"),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'p w\\'x' dbname=d", "host=h password = *** dbname=d"),
    ],
)
def test_redact_url_hides_every_spelling_of_a_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_removes_a_password_as_written_and_decoded() -> None:
    url = "postgresql://u@h/db?password=p%25w0rd"
    message = "invalid percent-encoded token: p%25w0rd (p%w0rd)"
    assert "w0rd" not in redact_text(message, url)
