"""Exactly-once under concurrency: two connections commit the same job at once.

In process mode a stalled worker and the worker that reclaimed its job can
commit the same (region, scan) at the same moment. The interleaving is made
deterministic by holding the first commit's transaction open (an outer
transaction around `JobWriter.commit`) until PostgreSQL shows the second
connection waiting for a lock; then the first commits. Whatever the second
would have written, exactly one set of rows must remain, the second commit
must neither fail nor write, and it must say so (it returns no jobs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from mpitrack import store
from mpitrack.track.result import TrackRow

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def connections(
    database_url: str, run_name: str
) -> Iterator[tuple[psycopg.Connection, psycopg.Connection]]:
    with (
        store.connect(database_url, run_name, retries=0) as first,
        store.connect(database_url, run_name, retries=0) as second,
    ):
        store.ensure_regions(first, [(1, "one"), (2, "two")])
        yield first, second


def job(region: int, scan: int, tracks: list[int], tag: str) -> store.JobResult:
    """A job whose rows and checkpoint say who computed it (``tag``)."""
    rows = [TrackRow(t, scan, True, False, {"who": tag, "position": [t, 1.0]}) for t in tracks]
    return store.JobResult(region, scan, scan, rows, f"{tag}-{region}-{scan}".encode(), 3)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def waits_for_a_lock(observer: psycopg.Connection, pid: int) -> bool:
    row = observer.execute(
        "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
    ).fetchone()
    observer.commit()
    return row is not None and row[0] == "Lock"


def contents(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    result = {
        "measurements": conn.execute(
            "SELECT region_id, track_id, scan_number, features->>'who' FROM measurements "
            "ORDER BY region_id, scan_number, track_id"
        ).fetchall(),
        "tracks": conn.execute(
            "SELECT region_id, track_id, first_detected_scan, last_detected_scan FROM tracks "
            "ORDER BY region_id, track_id"
        ).fetchall(),
        "checkpoints": conn.execute(
            "SELECT region_id, scan_number, state FROM tracker_checkpoints ORDER BY region_id"
        ).fetchall(),
    }
    conn.commit()
    return result


def race(
    first: psycopg.Connection,
    second: psycopg.Connection,
    winner_jobs: list[store.JobResult],
    loser_jobs: list[store.JobResult],
    database_url: str,
) -> tuple[list[store.JobResult], list[store.JobResult]]:
    """Commit ``winner_jobs`` on ``first`` while ``second`` commits ``loser_jobs``.

    The winner's transaction stays open until the loser waits for a lock, so
    the loser's commit overlaps the winner's from start to end. Returns what
    each commit says it wrote.
    """
    winner_writer, loser_writer = store.JobWriter(first), store.JobWriter(second)
    outcome: dict[str, object] = {}

    def loser() -> None:
        try:
            outcome["written"] = loser_writer.commit(loser_jobs)
        except Exception as exc:  # reported by the assertion below
            outcome["error"] = exc

    with store.connect(database_url, None, retries=0) as observer:
        with first.transaction():
            won = winner_writer.commit(winner_jobs)
            thread = threading.Thread(target=loser, name="loser")
            thread.start()
            pid = second.info.backend_pid
            wait_until(
                lambda: waits_for_a_lock(observer, pid) or not thread.is_alive(),
                "the second commit to wait for the first",
            )
            assert thread.is_alive(), f"the second commit did not wait: {outcome}"
        thread.join(timeout=60)
    assert not thread.is_alive(), "the second commit never finished"
    assert "error" not in outcome, f"the second commit failed: {outcome['error']!r}"
    return won, outcome["written"]  # type: ignore[return-value]


def test_two_commits_of_a_regions_first_job_write_one_set_of_rows(
    connections: tuple[psycopg.Connection, psycopg.Connection], database_url: str
) -> None:
    first, second = connections
    mine, theirs = job(1, 0, [1, 2], "winner"), job(1, 0, [1, 3], "loser")
    won, lost = race(first, second, [mine], [theirs], database_url)
    assert won == [mine]
    assert lost == [], "the second commit wrote over a job that was committed"
    assert contents(first) == {
        "measurements": [(1, 1, 0, "winner"), (1, 2, 0, "winner")],
        "tracks": [(1, 1, 0, 0), (1, 2, 0, 0)],
        "checkpoints": [(1, 0, b"winner-1-0")],
    }


def test_two_commits_of_a_later_job_write_one_set_of_rows(
    connections: tuple[psycopg.Connection, psycopg.Connection], database_url: str
) -> None:
    first, second = connections
    store.JobWriter(first).commit([job(1, 0, [1], "earlier")])
    mine, theirs = job(1, 1, [1, 2], "winner"), job(1, 1, [1, 3], "loser")
    won, lost = race(first, second, [mine], [theirs], database_url)
    assert won == [mine]
    assert lost == []
    assert contents(first) == {
        "measurements": [(1, 1, 0, "earlier"), (1, 1, 1, "winner"), (1, 2, 1, "winner")],
        "tracks": [(1, 1, 0, 1), (1, 2, 1, 1)],
        "checkpoints": [(1, 1, b"winner-1-1")],
    }


def test_a_batch_racing_a_first_job_keeps_its_other_region(
    connections: tuple[psycopg.Connection, psycopg.Connection], database_url: str
) -> None:
    """The loser's batch holds a job already committed and a fresh one of another
    region: only the fresh one is written, in regions' lock order (no deadlock)."""
    first, second = connections
    mine = job(2, 0, [1], "winner")
    theirs = [job(1, 0, [4], "loser"), job(2, 0, [5], "loser")]
    won, lost = race(first, second, [mine], theirs, database_url)
    assert won == [mine]
    assert lost == [theirs[0]]
    assert contents(first)["checkpoints"] == [(1, 0, b"loser-1-0"), (2, 0, b"winner-2-0")]
    assert contents(first)["measurements"] == [(1, 4, 0, "loser"), (2, 1, 0, "winner")]
