"""No command ever prints a password: every spelling of one in a PostgreSQL or Redis URL,
in every command's output, on success and on failure."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from harness import MPIEXEC, MPITRACK, simulate

from mpitrack.store import create_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

SECRET = "Zq7secretPW"


def outputs(config: Path, env: dict[str, str], tmp_path: Path, ranks: int = 1) -> dict[str, str]:
    """stdout and stderr of every command that touches the servers or shows the config
    (``run`` under ``mpiexec -n ranks`` when ranks > 1)."""
    commands = {
        "config show": ["config", "show", "-c", str(config)],
        "db init": ["db", "init", "-c", str(config)],
        "db status": ["db", "status", "-c", str(config)],
        "run": ["run", "-c", str(config)],
        "report": ["report", "-c", str(config), "-o", str(tmp_path / "report")],
        "evaluate": ["evaluate", "-c", str(config)],
        "stop": ["stop", "-c", str(config)],
    }
    seen = {}
    for name, args in commands.items():
        command = [MPITRACK, *args]
        if name == "run" and ranks > 1:
            command = [MPIEXEC, "-n", str(ranks), *command]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        seen[name] = done.stdout + done.stderr
    return seen


@pytest.mark.parametrize(
    "spelling",
    [
        f"postgresql://mpitrack:{SECRET}@127.0.0.1:9/x",
        f"postgresql://mpitrack@127.0.0.1:9/x?password={SECRET}",
        f"postgresql://mpitrack@127.0.0.1:9/x?password={SECRET}%25",  # a '%' in it
        f"postgresql://mpitrack@127.0.0.1:9/x?password={SECRET}%zz",  # a bad '%' escape
        f"host=127.0.0.1 port=9 dbname=x password={SECRET}",
    ],
)
def test_unreachable_servers_never_show_the_password(
    spelling: str, redis_url: str, tmp_path: Path
) -> None:
    config = simulate(tmp_path / "exp", "--scenario", "isolated", "--regions", "1", "--scans", "2")
    env = dict(
        os.environ,
        MPITRACK_DATABASE_URL=spelling,
        MPITRACK_REDIS_URL=f"redis://:{SECRET}@127.0.0.1:9/0",
        MPITRACK_RUNTIME__CONNECT_RETRIES="0",
        MPITRACK_WORKDIR=str(tmp_path / "work"),
    )
    for name, text in outputs(config, env, tmp_path).items():
        assert SECRET not in text, f"`mpitrack {name}` printed the password:\n{text}"
        assert text.strip(), f"`mpitrack {name}` said nothing"


def test_a_run_against_reachable_servers_never_shows_the_password(
    postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = simulate(tmp_path / "exp", "--scenario", "isolated", "--regions", "2", "--scans", "2")
    database = create_database(postgres_server_url, "e2e_secrets")
    if "://" in database:
        with_password = f"{database}{'&' if '?' in database else '?'}password={SECRET}"
    else:
        with_password = f"{database} password={SECRET}"
    env = dict(
        os.environ,
        # The embedded servers ignore the password (local trust); it must still never show.
        MPITRACK_DATABASE_URL=with_password,
        MPITRACK_REDIS_URL=redis_url,
        MPITRACK_WORKDIR=str(tmp_path / "work"),
        MPITRACK_REPORT__ENABLED="false",
    )
    seen = outputs(config, env, tmp_path, ranks=2)
    assert "2 scans" in seen["report"], seen["report"]
    for name, text in seen.items():
        assert SECRET not in text, f"`mpitrack {name}` printed the password:\n{text}"
