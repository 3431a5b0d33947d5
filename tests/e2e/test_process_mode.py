"""Separate-process mode end to end: `mpitrack listen`, `dispatch`, `work` x2 and `stats`
as real processes over real Redis and PostgreSQL, compared with an MPI run of the same data.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from test_run import (  # the MPI end-to-end helpers, beside this file
    MPITRACK,
    assert_never_two_jobs_in_flight,
    env_for,
    job_events,
    make_database,
    query,
    rows,
    run_mpitrack,
    simulate,
)

from mpitrack.redis_keys import GROUP, RedisKeys
from mpitrack.services import EmbeddedRedis

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

# The services of compose.yaml and scripts/local, with the same commands.
ROLES = ("dispatch", "listen", "work", "work", "stats")


class Processes:
    """The roles as child processes, each logging to its own file."""

    def __init__(self, config: Path, env: dict[str, str], logs: Path, *work_args: str) -> None:
        self.config = config
        self.env = env
        self.logs = logs
        self.work_args = work_args
        self.dispatch_args: tuple[str, ...] = ()
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.started: dict[str, int] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, role: str) -> subprocess.Popen:
        """Start one more ``role`` process, logging to ``<role><n>.log`` (n counts from 1)."""
        self.started[role] = self.started.get(role, 0) + 1
        name = f"{role}{self.started[role]}"
        extra = {"work": self.work_args, "dispatch": self.dispatch_args}.get(role, ())
        out = (self.logs / f"{name}.log").open("w")
        proc = subprocess.Popen(
            [MPITRACK, role, "--config", str(self.config), *extra],
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        out.close()
        self.procs.append((role, proc))
        return proc

    def start_all(self) -> None:
        for role in ROLES:
            self.start(role)

    def role(self, role: str) -> list[subprocess.Popen]:
        return [p for r, p in self.procs if r == role]

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    def all_logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()}" for p in sorted(self.logs.glob("*.log")))

    def wait_all(self, timeout: float = 120) -> dict[str, list[int]]:
        """Exit codes by role, once every process has exited."""
        deadline = time.monotonic() + timeout
        codes: dict[str, list[int]] = {}
        for role, proc in self.procs:
            left = max(0.1, deadline - time.monotonic())
            try:
                codes.setdefault(role, []).append(proc.wait(timeout=left))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{role} did not exit\n{self.all_logs()}") from None
        return codes

    def kill_all(self) -> None:
        for _role, proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def processes(
    config: Path, env: dict[str, str], logs: Path, *work_args: str
) -> Iterator[Processes]:
    procs = Processes(config, env, logs, *work_args)
    try:
        yield procs
    finally:
        procs.kill_all()


def wait_for(condition: Callable[[], bool], what: str, procs: Processes, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{procs.all_logs()}"
        time.sleep(0.005)


def process_env(database_url: str, redis_url: str, run: str, workdir: Path) -> dict[str, str]:
    env = env_for(database_url, redis_url, run)
    env["MPITRACK_WORKDIR"] = str(workdir)
    return env


def done_jobs(workdir: Path) -> int:
    path = workdir / "logs" / "jobs.jsonl"
    return path.read_text().count('"done"') if path.exists() else 0


def reports_logged(workdir: Path) -> int:
    path = workdir / "logs" / "jobs.jsonl"
    return done_jobs(workdir) + path.read_text().count('"failed"') if path.exists() else 0


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("process_mode")
    return simulate(
        out,
        "--scenario",
        "isolated,drifting,crossing,appear_vanish",
        "--regions",
        "4",
        "--scans",
        "6",
        "--seed",
        "11",
    )


@pytest.fixture(scope="module")
def reference(experiment: Path, postgres_server_url: str, redis_server_url: str, tmp_path_factory):
    """The MPI run's rows on the same data."""
    url = make_database(postgres_server_url, "pm_reference")
    env = process_env(url, redis_server_url, "pm-reference", tmp_path_factory.mktemp("ref"))
    result = run_mpitrack(experiment, 3, env)
    assert result.returncode == 0, result.stderr
    expected = rows(url, "pm-reference")
    assert expected
    return expected


def test_two_worker_processes_give_the_mpi_rows(
    experiment: Path, reference: list, postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    url = make_database(postgres_server_url, "pm_two_workers")
    workdir = tmp_path / "work"
    env = process_env(url, redis_url, "pm-two", workdir)
    with processes(experiment, env, tmp_path / "logs") as procs:
        procs.start_all()
        codes = procs.wait_all()
        assert codes == {"dispatch": [0], "listen": [0], "work": [0, 0], "stats": [0]}, (
            procs.all_logs()
        )
        assert "24 jobs committed, 0 failed" in procs.log("dispatch1")
    assert rows(url, "pm-two") == reference
    assert query(url, "pm-two", "SELECT count(*) FROM scan_stats") == [(6,)]
    assert_never_two_jobs_in_flight(job_events(workdir))
    client = redis.Redis.from_url(redis_url)
    try:
        keys = RedisKeys("pm-two")
        assert client.xlen(keys.dead) == 0
        assert client.xpending(keys.jobs, GROUP)["pending"] == 0
    finally:
        client.close()


def test_a_worker_killed_mid_job_has_its_job_reclaimed(
    experiment: Path, reference: list, postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    url = make_database(postgres_server_url, "pm_kill")
    workdir = tmp_path / "work"
    env = process_env(url, redis_url, "pm-kill", workdir)
    keys = RedisKeys("pm-kill")
    client = redis.Redis.from_url(redis_url)
    try:
        # A lease of 5 s: only the kill can let it expire (the survivor's heartbeat,
        # every 1.7 s, would have to be 3 s late), and the reclaim costs 5 s.
        with processes(experiment, env, tmp_path / "logs", "--lease", "5") as procs:
            procs.start_all()
            victim = procs.role("work")[0]
            consumer = f"{socket.gethostname()}-{victim.pid}"

            def victim_holds_a_job() -> bool:
                assert victim.poll() is None, procs.all_logs()
                with contextlib.suppress(redis.exceptions.ResponseError):
                    return bool(
                        client.xpending_range(keys.jobs, GROUP, "-", "+", 1, consumername=consumer)
                    )
                return False

            def stopped_holding_a_job() -> bool:
                """Freeze the victim while it holds a job (it may finish the job it was
                seen with before it is frozen: then let it go on and look again)."""
                if not victim_holds_a_job():
                    return False
                victim.send_signal(signal.SIGSTOP)
                if victim_holds_a_job():
                    return True
                victim.send_signal(signal.SIGCONT)
                return False

            wait_for(stopped_holding_a_job, "the first worker to take a job", procs)
            os.kill(victim.pid, signal.SIGKILL)
            held = client.xpending_range(keys.jobs, GROUP, "-", "+", 10, consumername=consumer)
            assert held, "the killed worker held no job: nothing was tested"
            victim.wait()
            procs.procs = [(r, p) for r, p in procs.procs if p is not victim]
            codes = procs.wait_all()
            assert codes == {"dispatch": [0], "listen": [0], "work": [0], "stats": [0]}, (
                procs.all_logs()
            )
            assert "reclaimed job entry" in procs.log("work2")
            assert "24 jobs committed, 0 failed" in procs.log("dispatch1")
        assert client.xpending(keys.jobs, GROUP)["pending"] == 0
        assert client.xlen(keys.dead) == 0
    finally:
        client.close()
    assert rows(url, "pm-kill") == reference
    assert_never_two_jobs_in_flight(job_events(workdir))


def test_processes_ride_out_a_redis_restart(
    experiment: Path, reference: list, postgres_server_url: str, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis")
    redis_url = server.start()
    url = make_database(postgres_server_url, "pm_restart")
    workdir = tmp_path / "work"
    env = process_env(url, redis_url, "pm-restart", workdir)
    try:
        with processes(experiment, env, tmp_path / "logs", "--reconnect", "60") as procs:
            procs.start_all()
            wait_for(lambda: done_jobs(workdir) >= 3, "the first jobs", procs)
            server.stop()  # no persistence: everything in Redis is lost
            assert done_jobs(workdir) < 24, "the run finished before the restart"
            server.start()
            codes = procs.wait_all()
            assert codes == {"dispatch": [0], "listen": [0], "work": [0, 0], "stats": [0]}, (
                procs.all_logs()
            )
            assert "Redis lost the run's keys" in procs.log("dispatch1")
            assert "the frame registry is gone" in procs.log("listen1")
            assert "24 jobs committed, 0 failed" in procs.log("dispatch1")
    finally:
        server.stop()
    assert rows(url, "pm-restart") == reference
    assert query(url, "pm-restart", "SELECT count(*) FROM scan_stats") == [(6,)]


def test_a_poisoned_frame_lands_in_the_dead_letter_stream_and_the_rest_finishes(
    postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = simulate(tmp_path / "exp", "--scenario", "isolated", "--regions", "3", "--scans", "4")
    bad = sorted((tmp_path / "exp" / "frames").glob("region_1_frame_*_scan_2.npy"))[3]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated mid-file
    url = make_database(postgres_server_url, "pm_poison")
    workdir = tmp_path / "work"
    env = process_env(url, redis_url, "pm-poison", workdir)
    with processes(config, env, tmp_path / "logs", "--max-attempts", "2") as procs:
        # A live run: it ends only when asked to (`mpitrack stop`).
        procs.dispatch_args = ("--follow",)
        procs.start_all()
        wait_for(lambda: reports_logged(workdir) >= 12, "every job's report", procs)
        assert all(proc.poll() is None for _role, proc in procs.procs), "a live run ended"
        stop = subprocess.run(
            [MPITRACK, "stop", "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert stop.returncode == 0 and "mpitrack:pm-poison:stop" in stop.stdout, stop.stderr
        codes = procs.wait_all()
        assert codes == {"dispatch": [1], "listen": [0], "work": [0, 0], "stats": [0]}, (
            procs.all_logs()
        )
        assert "11 jobs committed, 1 failed" in procs.log("dispatch1")
        assert bad.name in procs.log("dispatch1")
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        dead = client.xrange(RedisKeys("pm-poison").dead)
    finally:
        client.close()
    assert len(dead) == 1
    fields = dead[0][1]
    assert fields["file"] == str(bad) and fields["attempts"] == "2"
    assert '"region": 1, "scan": 2' in fields["data"]
    assert query(
        url,
        "pm-poison",
        "SELECT region_id, scan_number, attempt, file FROM job_failures ORDER BY attempt",
    ) == [(1, 2, 1, str(bad)), (1, 2, 2, str(bad))]
    assert query(
        url,
        "pm-poison",
        "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY region_id",
    ) == [(0, 3), (1, 3), (2, 3)]
