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

import pytest
from harness import experiment_query, experiment_rows, kill_rank_mid_run

from mpitrack import store

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
MPITRACK = str(BIN / "mpitrack")
# A real checkpoint of format 1, which this mpitrack no longer reads (see its README).
FORMAT_1 = Path(__file__).resolve().parents[1] / "data" / "checkpoints" / "format1.npz"


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


def rows(database_url: str, run: str) -> list[tuple]:
    """Every measurement row of experiment ``run``."""
    return experiment_rows(database_url, run)


def query(database_url: str, run: str, sql: str) -> list[tuple]:
    """A query in experiment ``run``'s tables."""
    return experiment_query(database_url, run, sql)


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
    expected = rows(single, "single")
    assert expected, "the single-process run wrote no rows"
    assert rows(two_ranks, "two") == expected
    assert rows(parallel, "parallel") == expected
    assert query(parallel, "parallel", "SELECT count(*) FROM scan_stats") == [(8,)]
    report = (tmp_path / "parallel" / "report" / "index.html").read_text()
    assert "FINAL" in report and "scan_stats.csv" in report
    assert_never_two_jobs_in_flight(job_events(tmp_path / "parallel"))
    # Re-running a finished run changes nothing.
    again = run_mpitrack(experiment, 4, env)
    assert again.returncode == 0, again.stderr
    assert "0 jobs to run" in again.stderr
    assert rows(parallel, "parallel") == expected


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
    kill_rank_mid_run(command, env, workdir, after_done=40, rank=1)
    partial = query(
        crashed, "crashed", "SELECT count(*) FROM tracker_checkpoints WHERE scan_number = 29"
    )
    assert partial[0][0] < 6, "the run finished before the kill; nothing was tested"
    resumed = run_mpitrack(config, 4, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert rows(crashed, "crashed") == rows(reference, "reference")
    assert query(crashed, "crashed", "SELECT count(*) FROM measurements") == query(
        reference, "reference", "SELECT count(*) FROM measurements"
    )


def test_frames_arriving_during_the_run_are_all_processed(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    """The producer is paused as soon as it has written the config and resumed once
    the dispatcher has started, so the frames really arrive while the run is up
    (unpaused, 264 frames at 300 fps are all written before mpiexec has started)."""
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
    workdir = tmp_path / "work"
    run_log = tmp_path / "run.log"
    run = None
    try:
        config = out / "experiment.yaml"
        deadline = time.monotonic() + 60
        while not config.exists():
            assert time.monotonic() < deadline, "the simulator wrote no config"
            assert producer.poll() in (None, 0)
            time.sleep(0.01)
        producer.send_signal(signal.SIGSTOP)
        env = env_for(database_url, redis_url, "live")
        env["MPITRACK_WORKDIR"] = str(workdir)
        with run_log.open("w") as log:
            run = subprocess.Popen(
                [MPIEXEC, "-n", "4", MPITRACK, "run", "--config", str(config)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 120
        while "jobs to run" not in run_log.read_text():
            assert run.poll() is None, run_log.read_text()
            assert time.monotonic() < deadline, "the dispatcher did not start"
            time.sleep(0.02)
        dispatcher_started = time.time_ns()
        producer.send_signal(signal.SIGCONT)
        assert producer.wait(timeout=120) == 0
        assert run.wait(timeout=180) == 0, run_log.read_text()
    finally:
        for process in (producer, run):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()
    frames = [p.stat().st_mtime_ns for p in (out / "frames").rglob("*.npy")]
    assert len(frames) == 264
    late = sum(t > dispatcher_started for t in frames)
    assert late >= 200, f"only {late} of 264 frames arrived after the dispatcher started"
    assert query(
        database_url,
        "live",
        "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY region_id",
    ) == [(r, 5) for r in range(4)]
    events = job_events(workdir)
    done = [e for e in events if e["event"] == "done"]
    assert len(done) == 24
    first_dispatch = min(e["t"] for e in events if e["event"] == "dispatch")
    assert first_dispatch * 1e9 < max(frames), "no job was sent before the last frame arrived"


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
    failures = query(
        database_url, "corrupt", "SELECT region_id, scan_number, file FROM job_failures"
    )
    assert failures == [(1, 2, str(bad))]
    assert query(
        database_url,
        "corrupt",
        "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY region_id",
    ) == [(0, 3), (1, 3), (2, 3)]
    scan2 = query(
        database_url,
        "corrupt",
        "SELECT detected FROM measurements WHERE region_id = 1 AND scan_number = 2",
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


def test_a_config_error_under_mpiexec_is_printed_once(tmp_path: Path) -> None:
    config = tmp_path / "x.yaml"
    config.write_text("run: x\nregions: [{id: 0, frames: [0, 10]}]\nscans: {last: 2}\nrunn: 1\n")
    result = subprocess.run(
        [MPIEXEC, "-n", "3", MPITRACK, "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("runn: unknown key") == 1, result.stderr


def test_bad_values_from_the_command_line_and_environment_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "x.yaml"
    config.write_text("run: x\nregions: [{id: 0, frames: [0, 10]}]\nscans: {last: 2}\n")
    for extra, env in (
        (["--scans", f"0:{2**31}"], {}),
        (["--idle-timeout", "-1", "--follow"], {}),
        ([], {"MPITRACK_DATABASE_URL": "postgresql://h:99999/x"}),
        ([], {"MPITRACK_REDIS_URL": "redis://h:0/0"}),
        ([], {"MPITRACK_FRAMES__PATTERN": "r{region}_s{scan}.npy"}),
    ):
        result = subprocess.run(
            [MPITRACK, "run", "--config", str(config), *extra],
            capture_output=True,
            text=True,
            timeout=60,
            env=dict(os.environ, **env),
        )
        assert result.returncode == 2, (extra, env, result.stderr)
        assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
        for name in env:
            assert f"environment {name}" in result.stderr, result.stderr


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
        database_url,
        env["MPITRACK_RUN"],
        "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY region_id",
    ) == [(0, 2), (1, 2)]


def test_a_checkpoint_of_an_unreadable_format_stops_the_run_with_one_clear_message(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    run = "old-checkpoint"
    config = simulate(tmp_path / "exp", "--scenario", "isolated", "--regions", "3", "--scans", "4")
    env = env_for(database_url, redis_url, run)
    env["MPITRACK_WORKDIR"] = str(tmp_path / "work")
    first = run_mpitrack(config, 1, dict(env, MPITRACK_SCANS__LAST="1"))
    assert first.returncode == 0, first.stderr
    with store.connect(database_url, run, retries=0) as conn:
        conn.execute(
            "UPDATE tracker_checkpoints SET state = %s, format_version = 1 WHERE region_id = 1",
            (FORMAT_1.read_bytes(),),
        )
    checkpoints = "SELECT region_id, scan_number, state FROM tracker_checkpoints ORDER BY 1"
    before = rows(database_url, run), query(database_url, run, checkpoints)

    refused = run_mpitrack(config, 3, env)
    assert refused.returncode == 2, refused.stderr
    assert "Traceback" not in refused.stderr, refused.stderr
    errors = [line for line in refused.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, refused.stderr
    (error,) = errors
    assert "region 1 (after scan 1)" in error and "format version 1" in error, error
    assert "region 0" not in error and "region 2" not in error, error
    assert "delete its rows from measurements, tracks and tracker_checkpoints" in error, error
    assert (rows(database_url, run), query(database_url, run, checkpoints)) == before
    assert query(database_url, run, "SELECT count(*) FROM job_failures") == [(0,)]

    # What the message says to do works: region 1 starts over, the others resume.
    with store.connect(database_url, run, retries=0) as conn:
        for table in ("measurements", "tracks", "tracker_checkpoints"):
            conn.execute(f"DELETE FROM {table} WHERE region_id = 1")
    resumed = run_mpitrack(config, 3, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "8 jobs committed, 0 failed" in resumed.stderr, resumed.stderr
    assert query(
        database_url, run, "SELECT region_id, scan_number FROM tracker_checkpoints ORDER BY 1"
    ) == [(0, 3), (1, 3), (2, 3)]


def test_a_replaced_frame_is_tracked_again_with_retry_failed(
    postgres_server_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = simulate(tmp_path / "exp", "--scenario", "drifting", "--regions", "2", "--scans", "4")
    clean = make_database(postgres_server_url, "e2e_clean")
    env = env_for(clean, redis_url, "retry")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "clean")
    assert run_mpitrack(config, 3, env).returncode == 0

    bad = sorted((tmp_path / "exp" / "frames").glob("region_1_frame_*_scan_1.npy"))[2]
    good = bad.read_bytes()
    bad.write_bytes(good[:100])
    old = time.time() - 60
    os.utime(bad, (old, old))  # an old, truncated file: nothing to wait for
    url = make_database(postgres_server_url, "e2e_retry")
    env = env_for(url, redis_url, "retry")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "work")
    failed = run_mpitrack(config, 3, env)
    assert failed.returncode == 1 and "--retry-failed" in failed.stderr, failed.stderr
    bad.write_bytes(good)  # the frame is replaced
    again = run_mpitrack(config, 3, env)
    assert again.returncode == 0 and "0 jobs to run" in again.stderr  # a re-run alone: nothing
    retried = run_mpitrack(config, 3, env, "--retry-failed")
    assert retried.returncode == 0, retried.stderr
    assert "region 1 (failed at scan 1)" in retried.stderr
    assert rows(url, "retry") == rows(clean, "retry")
    assert query(url, "retry", "SELECT count(*) FROM scan_stats") == [(4,)]
    assert query(url, "retry", "SELECT count(*) FROM job_failures WHERE retried_at IS NULL") == [
        (0,)
    ]


def test_an_empty_file_and_a_directory_with_frame_names_fail_their_jobs_without_a_hang(
    database_url: str, redis_url: str, tmp_path: Path
) -> None:
    config = simulate(tmp_path / "exp", "--scenario", "isolated", "--regions", "3", "--scans", "2")
    frames = tmp_path / "exp" / "frames"
    empty = sorted(frames.glob("region_0_frame_*_scan_1.npy"))[1]
    empty.write_bytes(b"")
    folder = sorted(frames.glob("region_2_frame_*_scan_0.npy"))[4]
    folder.unlink()
    folder.mkdir()
    env = env_for(database_url, redis_url, "unusable")
    env["MPITRACK_WORKDIR"] = str(tmp_path / "work")
    env["MPITRACK_FRAMES__SETTLE_S"] = "1"
    result = run_mpitrack(config, 3, env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "4 jobs committed, 2 failed" in result.stderr, result.stderr
    assert f"{folder.name} in frame directory" in result.stderr  # named when it is found
    failures = query(
        database_url, "unusable", "SELECT region_id, scan_number, file FROM job_failures ORDER BY 1"
    )
    assert failures == [(0, 1, str(empty)), (2, 0, str(folder))]
