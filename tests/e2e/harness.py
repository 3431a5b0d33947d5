"""What the fault tests share: tiny experiments whose frames arrive in two batches, runs
as child processes, waits with deadlines, and a run's rows read from its own experiment.

A fault is injected at a point the test controls: the frames of the first scans are
delivered, the run commits their jobs and then waits for the rest; the fault strikes
while it waits, and the remaining frames are delivered after it. So every case is
deterministic, and none sleeps for a fixed time: each waits for a condition with a
deadline, so a hang fails the test instead of blocking CI.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

BIN = Path(sys.executable).parent
MPIEXEC = str(BIN / "mpiexec")
MPITRACK = str(BIN / "mpitrack")


def simulate(out: Path, *args: str) -> Path:
    subprocess.run([MPITRACK, "-q", "simulate", "--out", str(out), *args], check=True, timeout=120)
    return out / "experiment.yaml"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)


def experiment_rows(database_url: str, run: str) -> list[tuple]:
    """Every measurement row of experiment ``run``, in a fixed order."""
    return experiment_query(
        database_url,
        run,
        "SELECT region_id, track_id, scan_number, detected, overlapping, features "
        "FROM measurements ORDER BY region_id, scan_number, track_id",
    )


def experiment_query(database_url: str, run: str, statement: str) -> list[tuple]:
    """A query inside experiment ``run``'s schema (and nowhere else)."""
    with psycopg.connect(database_url) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(run)))
        return conn.execute(statement).fetchall()


class StagedFrames:
    """An experiment whose frames are held back and delivered by scan.

    The simulator writes every frame; they are moved aside and ``deliver(scans)``
    renames a scan's frames into the frame directory (atomically, as producers should).
    """

    def __init__(self, config: Path) -> None:
        self.config = config
        self.frames = config.parent / "frames"
        self.held = config.parent / "held"
        if not self.held.exists():
            self.frames.rename(self.held)
            self.frames.mkdir()

    def deliver(self, scans: range) -> None:
        for scan in scans:
            for path in sorted(self.held.glob(f"*_scan_{scan}.npy")):
                os.replace(path, self.frames / path.name)


def copy_experiment(config: Path, out: Path) -> Path:
    """A private copy of a simulated experiment (config, truth and frames)."""
    shutil.copytree(config.parent, out, ignore=shutil.ignore_patterns("work"))
    return out / config.name


def done_jobs(workdir: Path) -> int:
    path = workdir / "logs" / "jobs.jsonl"
    return path.read_text().count('"done"') if path.exists() else 0


def descendants(root: int) -> set[int]:
    """PIDs of every process below root (mpiexec -> its proxy -> the ranks)."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = {root}
    grew = True
    while grew:
        new = {pid for pid, ppid in parent.items() if ppid in found and pid not in found}
        found |= new
        grew = bool(new)
    return found - {root}


def rank_pid(mpiexec_pid: int, rank: int) -> int | None:
    """The PID of one rank of this mpiexec only (never another suite's processes)."""
    for pid in sorted(descendants(mpiexec_pid)):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"mpitrack" in cmdline and f"PMI_RANK={rank}".encode() in environ:
            return pid
    return None


def kill_rank_mid_run(
    command: list[str], env: dict[str, str], workdir: Path, after_done: int, rank: int
) -> None:
    """Run command (an mpiexec of mpitrack run), SIGKILL its MPI rank ``rank`` once the
    run's job log shows ``after_done`` jobs done, and check that the run then failed."""
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and done_jobs(workdir) < after_done:
            assert process.poll() is None, f"the run ended before rank {rank} could be killed"
            time.sleep(0.02)
        pid = rank_pid(process.pid, rank)
        assert pid is not None, f"rank {rank} not found"
        os.kill(pid, signal.SIGKILL)
        assert process.wait(timeout=60) != 0
    finally:
        kill_tree(process)


def kill_tree(process: subprocess.Popen) -> None:
    """Kill a child and everything below it (a test that failed mid-run)."""
    if process.poll() is not None:
        return
    for pid in descendants(process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.kill()
    process.wait()
