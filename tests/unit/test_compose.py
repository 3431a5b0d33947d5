"""compose.yaml: valid, configured only through the environment, and running exactly
the commands that scripts/local runs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / "configs" / "compose.env.example"
LOCAL = ROOT / "scripts" / "local"
ROLES = {"listener", "dispatcher", "tracker", "stats"}

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (enough for this file)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if op and op.endswith("-"):
            return value if value else arg
        if op and op.endswith("?") and not value:
            raise AssertionError(f"compose.yaml needs {name}: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text.replace("$$", "\0")).replace("\0", "$")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_services_have_healthchecks_and_restart_policies() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "redis"} | ROLES
    for name, service in services.items():
        assert "healthcheck" in service and service["healthcheck"]["test"], name
        assert service.get("restart") in ("unless-stopped", "always") or str(
            service.get("restart")
        ).startswith("on-failure"), name
    for name in ROLES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name
        mounts = [interpolate(v, env_example()).split(":")[1] for v in services[name]["volumes"]]
        assert "/data/frames" in mounts and "/config/experiment.yaml" in mounts, name
    assert services["tracker"]["deploy"]["replicas"] == "${TRACKER_REPLICAS:-2}"


def test_no_password_is_written_in_the_compose_file() -> None:
    text = COMPOSE.read_text()
    for line in text.splitlines():
        if re.search(r"pass(word)?", line, re.IGNORECASE) and ":" in line:
            key, _, value = line.partition(":")
            value = value.strip()
            if value and not key.strip().startswith("#"):
                assert value.startswith("${"), f"a literal password in compose.yaml: {line}"
    urls = re.findall(r"\w+://[^\s\"']+", interpolate(text, env_example()))
    assert urls, "compose.yaml gives no server URL?"
    for url in urls:
        assert urlsplit(url).password is None, f"a password in a URL: {url}"


def test_every_required_variable_is_in_the_example_env_file() -> None:
    required = {m.group(1) for m in _VARIABLE.finditer(COMPOSE.read_text()) if m.group(2) == ":?"}
    assert required, "compose.yaml requires no variable?"
    example = env_example()
    assert required <= {k for k, v in example.items() if v}, required - set(example)


def local_commands(env: dict[str, str]) -> dict[str, list[str]]:
    result = subprocess.run(
        ["bash", str(LOCAL), "--config", "CONFIG", "--print-commands"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    commands = {}
    for line in result.stdout.splitlines():
        name, *argv = line.split("\t")
        commands[name] = argv
    return commands


def compose_commands(env: dict[str, str]) -> dict[str, list[str]]:
    commands = {}
    for name in ROLES:
        command = compose()["services"][name]["command"]
        argv = shlex.split(interpolate(command, env)) if isinstance(command, str) else command
        position = argv.index("--config") + 1
        assert argv[position] == "/config/experiment.yaml"
        argv[position] = "CONFIG"
        commands[name] = argv
    return commands


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"DISPATCH_ARGS": "--follow", "WORK_ARGS": "--lease 30", "TRACKER_REPLICAS": "5"},
    ],
)
def test_compose_and_scripts_local_run_the_same_commands(extra: dict[str, str]) -> None:
    env = {**env_example(), **extra}
    local = local_commands(env)
    assert set(local) == ROLES
    assert compose_commands(env) == local
    assert local["dispatcher"][:2] == ["mpitrack", "dispatch"]


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin")
    result = subprocess.run(
        [docker, "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
        env={**os.environ, "MPITRACK_ENV_FILE": str(ENV_EXAMPLE)},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
