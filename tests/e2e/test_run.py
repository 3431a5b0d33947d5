"""`mpitrack run` end to end: real mpiexec, real PostgreSQL and Redis, simulated frames.

Each run gets its own fresh database so runs can be compared row for row.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
MPITRACK = str(BIN / "mpitrack")


def simulate(out: Path, *args: str) -> Path:
    subprocess.run([MPITRACK, "-q", "simulate", "--out", str(out), *args], check=True, timeout=120)
    return out / "experiment.yaml"


def env_for(database_url: str, redis_url: str, run: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        MPITRACK_DATABASE_URL=database_url,
        MPITRACK_REDIS_URL=redis_url,
        MPITRACK_RUN=run,
        MPITRACK_RUNTIME__POLL_INTERVAL="0.05",
        # The HTML report costs seconds per run; one test below checks it.
        MPITRACK_REPORT__ENABLED="false",
    )
    return env


def run_mpitrack(
    config: Path, ranks: int, env: dict[str, str], *extra: str, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    command = [MPITRACK, "run", "--config", str(config), *extra]
    if ranks > 1:
        command = [MPIEXEC, "-n", str(ranks), *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def rows(database_url: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT region_id, track_id, scan_number, detected, overlapping, features "
            "FROM measurements ORDER BY region_id, scan_number, track_id"
        ).fetchall()


def query(database_url: str, sql: str) -> list[tuple]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql).fetchall()


def job_events(workdir: Path) -> list[dict]:
    path = workdir / "logs" / "jobs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_never_two_jobs_in_flight(events: list[dict]) -> None:
    in_flight: dict[int, int | None] = defaultdict(lambda: None)
    last_scan: dict[int, int] = {}
    for event in events:
        region = event["region"]
        if event["event"] == "dispatch":
            assert in_flight[region] is None, f"region {region}: two jobs in flight: {event}"
            assert event["scan"] > last_scan.get(region, -1), f"region {region} out of order"
            in_flight[region] = event["scan"]
        else:
            assert in_flight[region] == event["scan"], f"report without dispatch: {event}"
            in_flight[region] = None
            last_scan[region] = event["scan"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("mixed")
    return simulate(out, "--scenario", "mixed", "--regions", "6", "--scans", "8", "--seed", "3")


def make_database(server_url: str, name: str) -> str:
    """A fresh database for one run (name: a readable prefix)."""
    from mpitrack.store import create_database

    return create_database(server_url, name)


def test_four_ranks_give_the_same_rows_as_one_process(
    experiment: Path, postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    single = make_database(postgres_server_url, "e2e_single")
    two_ranks = make_database(postgres_server_url, "e2e_two_ranks")
    parallel = make_database(postgres_server_url, "e2e_parallel")
    env = env_for(single, redis_url, "single")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "single")
    one = run_mpitrack(experiment, 1, env)
    assert one.returncode == 0, one.stderr
    env = env_for(two_ranks, redis_url, "two")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "two")
    two = run_mpitrack(experiment, 2, env)
    assert two.returncode == 0, two.stderr
    assert "rank 0/2 dispatcher" in two.stderr and "scan 7:" in two.stderr  # stats on rank 0
    env = env_for(parallel, redis_url, "parallel")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "parallel")
    env["MPITRACK_REPORT__ENABLED"] = "true"
    four = run_mpitrack(experiment, 4, env)
    assert four.returncode == 0, four.stderr
    assert "48 jobs committed, 0 failed" in four.stderr
    expected = rows(single)
    assert expected, "the single-process run wrote no rows"
    assert rows(two_ranks) == expected
    assert rows(parallel) == expected
    assert query(parallel, "SELECT count(*) FROM scan_stats") == [(8,)]
    report = (tmp_path / "parallel" / "report" / "index.html").read_text()
    assert "FINAL" in report and "scan_stats.csv" in report
    assert_never_two_jobs_in_flight(job_events(tmp_path / "parallel"))
    # Re-running a finished run changes nothing.
    again = run_mpitrack(experiment, 4, env)
    assert again.returncode == 0, again.stderr
    assert "0 jobs to run" in again.stderr
    assert rows(parallel) == expected


def _worker_pid(rank: int) -> int | None:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"mpitrack" in cmdline and f"PMI_RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_killed_worker_then_rerun_gives_the_uninterrupted_rows(
    postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = simulate(
        tmp_path / "exp",
        "--scenario",
        "drifting,crossing,appear_vanish",
        "--regions",
        "6",
        "--scans",
        "30",
        "--seed",
        "5",
    )
    reference = make_database(postgres_server_url, "e2e_reference")
    env = env_for(reference, redis_url, "reference")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "reference")
    done = run_mpitrack(config, 3, env)
    assert done.returncode == 0, done.stderr

    crashed = make_database(postgres_server_url, "e2e_crashed")
    env = env_for(crashed, redis_url, "crashed")
    workdir = tmp_path / "crashed"
    env["MPITRACK_WORKDIR"] = str(workdir)
    command = [MPIEXEC, "-n", "4", MPITRACK, "run", "--config", str(config)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        log = workdir / "logs" / "jobs.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count('"done"') >= 40:
                break
            assert process.poll() is None, "the run ended before the worker could be killed"
            time.sleep(0.05)
        pid = _worker_pid(1)
        assert pid is not None, "worker rank 1 not found"
        os.kill(pid, signal.SIGKILL)
        assert process.wait(timeout=60) != 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    partial = query(crashed, "SELECT count(*) FROM tracker_checkpoints WHERE scan_number = 29")
    assert partial[0][0] < 6, "the run finished before the kill; nothing was tested"
    resumed = run_mpitrack(config, 4, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert rows(crashed) == rows(reference)
    assert query(crashed, "SELECT count(*) FROM measurements") == query(
        reference, "SELECT count(*) FROM measurements"
    )


def test_frames_arriving_during_the_run_are_all_processed(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "live"
    producer = subprocess.Popen(
        [
            MPITRACK,
            "-q",
            "simulate",
            "--out",
            str(out),
            "--scenario",
            "isolated,drifting",
            "--regions",
            "4",
            "--scans",
            "6",
            "--fps",
            "300",
        ],
    )
    try:
        config = out / "experiment.yaml"
        deadline = time.monotonic() + 60
        while not config.exists():
            assert time.monotonic() < deadline, "the simulator wrote no config"
            assert producer.poll() in (None, 0)
            time.sleep(0.02)
        env = env_for(database_url, redis_url, "live")
        env["MPITRACK_WORKDIR"] = str(tmp_path / "work")
        result = run_mpitrack(config, 4, env)
        assert producer.wait(timeout=60) == 0
    finally:
        if producer.poll() is None:
            producer.kill()
    assert result.returncode == 0, result.stderr
    assert query(
        database_url, "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY region_id"
    ) == [(r, 5) for r in range(4)]
    done = [e for e in job_events(tmp_path / "work") if e["event"] == "done"]
    assert len(done) == 24


def test_a_corrupt_frame_fails_only_its_job_and_the_region_predicts_through(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = simulate(tmp_path / "exp", "--scenario", "isolated", "--regions", "3", "--scans", "4")
    frames = sorted((tmp_path / "exp" / "frames").glob("region_1_frame_*_scan_2.npy"))
    bad = frames[3]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated mid-file
    env = env_for(database_url, redis_url, "corrupt")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "work")
    result = run_mpitrack(config, 3, env)
    assert result.returncode == 1
    assert "1 failed" in result.stderr and bad.name in result.stderr
    failures = query(database_url, "SELECT region_id, scan_number, file FROM job_failures")
    assert failures == [(1, 2, str(bad))]
    assert query(
        database_url, "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY region_id"
    ) == [(0, 3), (1, 3), (2, 3)]
    scan2 = query(
        database_url, "SELECT detected FROM measurements WHERE region_id = 1 AND scan_number = 2"
    )
    assert scan2 and all(not detected for (detected,) in scan2)


def test_bad_config_exits_2_and_unreachable_database_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "x.yaml"
    config.write_text("run: x\nregions: [{id: 0, frames: [0, 10]}]\nscans: {last: 2}\nrunn: 1\n")
    result = subprocess.run(
        [MPITRACK, "run", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"{config}: runn: unknown key; did you mean 'run'?" in result.stderr
    config.write_text("run: x\nregions: [{id: 0, frames: [0, 10]}]\nscans: {last: 2}\n")
    env = dict(
        os.environ,
        MPITRACK_DATABASE_URL="postgresql://nobody:pw@127.0.0.1:9/x",
        MPITRACK_REDIS_URL="redis://127.0.0.1:9/0",
        MPITRACK_RUNTIME__CONNECT_RETRIES="1",
    )
    result = subprocess.run(
        [MPITRACK, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 3, result.stderr
    assert "127.0.0.1:9" in result.stderr and "pw@" not in result.stderr


@pytest.mark.parametrize("how", ["stop key", "SIGTERM"])
def test_follow_mode_ends_on_a_stop_request_after_committing(
    how: str, database_url: str, redis_url: str, tmp_path: Path
) -> None:
    import redis

    config = simulate(tmp_path / "exp", "--scenario", "isolated", "--regions", "2", "--scans", "3")
    env = env_for(database_url, redis_url, f"follow-{how.replace(' ', '-')}")
    workdir = tmp_path / "work"
    env["MPITRACK_WORKDIR"] = str(workdir)
    command = [MPIEXEC, "-n", "3", MPITRACK, "run", "--config", str(config), "--follow"]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        log = workdir / "logs" / "jobs.jsonl"
        deadline = time.monotonic() + 120
        while not (log.exists() and log.read_text().count('"done"') == 6):
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the run did not process the frames"
            time.sleep(0.05)
        if how == "stop key":
            client = redis.Redis.from_url(redis_url)
            client.set(f"mpitrack:{env['MPITRACK_RUN']}:stop", "1")
            client.close()
        else:
            process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, stderr
    assert "finishing the jobs in flight" in stderr or "finishing in-flight jobs" in stderr
    assert query(
        database_url, "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY region_id"
    ) == [(0, 2), (1, 2)]
