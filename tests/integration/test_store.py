"""The store against a real PostgreSQL: schema, atomic job commits, idempotence."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from mpitrack import store
from mpitrack.track.result import TrackRow

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(database_url: str, run_name: str) -> Iterator[psycopg.Connection]:
    with store.connect(database_url, run_name, retries=0) as connection:
        store.ensure_regions(connection, [(1, "one"), (2, "two")])
        yield connection


def snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    tables = {
        "measurements": "SELECT id, region_id, track_id, scan_number, detected, overlapping, "
        "features FROM measurements ORDER BY id",
        "tracks": "SELECT * FROM tracks ORDER BY region_id, track_id",
        "checkpoints": "SELECT region_id, scan_number, format_version, state "
        "FROM tracker_checkpoints ORDER BY region_id",
    }
    result = {name: conn.execute(sql).fetchall() for name, sql in tables.items()}
    conn.commit()
    return result


def job(
    region: int, scan: int, rows: list[TrackRow], first_open: int | None = None
) -> store.JobResult:
    return store.JobResult(
        region_id=region,
        scan=scan,
        first_open_scan=scan if first_open is None else first_open,
        rows=rows,
        checkpoint=f"state-{region}-{scan}".encode(),
        format_version=1,
    )


def row(track: int, scan: int, detected: bool = True, overlapping: bool = False) -> TrackRow:
    return TrackRow(track, scan, detected, overlapping, {"position": {"omega": 1.5, "eta": 2.0}})


def test_schema_applies_twice_and_reports_version(database_url: str, run_name: str) -> None:
    with store.connect(database_url, run_name, retries=0) as conn:
        assert store.apply_schema(conn) == store.SCHEMA_VERSION
        assert store.apply_schema(conn) == store.SCHEMA_VERSION
        counts = store.table_counts(conn)
    assert counts == dict.fromkeys(store.TABLES, 0)


def test_commit_writes_rows_tracks_and_checkpoint_and_recommit_changes_nothing(
    conn: psycopg.Connection,
) -> None:
    writer = store.JobWriter(conn)
    first = job(1, 0, [row(1, 0), row(2, 0, overlapping=True)])
    assert writer.commit([first]) == [first]
    before = snapshot(conn)
    assert [(r[2], r[3], r[4], r[5]) for r in before["measurements"]] == [
        (1, 0, True, False),
        (2, 0, True, True),
    ]
    assert before["tracks"] == [(1, 1, 0, 0), (1, 2, 0, 0)]
    assert before["checkpoints"] == [(1, 0, 1, b"state-1-0")]
    assert writer.commit([first]) == []
    assert snapshot(conn) == before


def test_tracks_follow_first_and_last_detected_scan(conn: psycopg.Connection) -> None:
    writer = store.JobWriter(conn)
    writer.commit([job(1, 0, [row(1, 0)])])
    writer.commit([job(1, 1, [row(1, 1, detected=False)])])
    writer.commit([job(1, 2, [row(1, 2)])])
    assert snapshot(conn)["tracks"] == [(1, 1, 0, 2)]


def test_revision_window_replaces_rows_and_drops_tracks_left_without_rows(
    conn: psycopg.Connection,
) -> None:
    writer = store.JobWriter(conn)
    writer.commit([job(1, 0, [row(1, 0)])])
    writer.commit([job(1, 1, [row(1, 0), row(1, 1), row(2, 1)], first_open=0)])
    # Scan 2 revises scans 1..2: track 2 was a false birth, track 1 was missed in scan 1.
    writer.commit([job(1, 2, [row(1, 1, detected=False), row(1, 2)], first_open=1)])
    rows = [(r[2], r[3], r[4]) for r in snapshot(conn)["measurements"]]
    assert sorted(rows) == [(1, 0, True), (1, 1, False), (1, 2, True)]
    assert snapshot(conn)["tracks"] == [(1, 1, 0, 2)]


def test_failure_inside_a_job_leaves_neither_rows_nor_checkpoint(conn: psycopg.Connection) -> None:
    writer = store.JobWriter(conn)
    bad_row = TrackRow(1, 0, True, False, {"position": {"omega": float("nan")}})
    with pytest.raises(
        store.NonFiniteFeature, match=r"region 1 scan 0 track 1: feature position.omega"
    ):
        writer.commit([job(1, 0, [row(2, 0), bad_row])])
    assert snapshot(conn) == {"measurements": [], "tracks": [], "checkpoints": []}
    # The connection is still usable for the next job.
    writer.commit([job(1, 0, [row(2, 0)])])
    assert len(snapshot(conn)["measurements"]) == 1


def test_rows_outside_the_open_window_are_refused(conn: psycopg.Connection) -> None:
    writer = store.JobWriter(conn)
    with pytest.raises(ValueError, match=r"outside the open window 3\.\.3"):
        writer.commit([job(1, 3, [row(1, 2)])])
    assert snapshot(conn)["checkpoints"] == []


def test_batch_of_jobs_commits_together_and_nested_jsonb_round_trips(
    conn: psycopg.Connection,
) -> None:
    writer = store.JobWriter(conn)
    nested = {
        "position": {"omega": 1.0},
        "covariance": [[1.0, 0.5], [0.5, 2.0]],
        "flags": {"a": True},
    }
    jobs = [job(1, 0, [TrackRow(1, 0, True, False, nested)]), job(2, 0, [row(1, 0)])]
    assert writer.commit(jobs) == jobs
    stored = conn.execute("SELECT features FROM measurements WHERE region_id = 1").fetchone()
    assert stored is not None and stored[0] == nested
    assert store.committed_scans(conn) == {1: 0, 2: 0}
    checkpoint = store.load_checkpoint(conn, 2)
    assert checkpoint is not None and checkpoint.state == b"state-2-0"
    with pytest.raises(ValueError, match="at most one job per region"):
        writer.commit([job(1, 1, []), job(1, 2, [])])


def test_failures_are_numbered_per_attempt(conn: psycopg.Connection) -> None:
    store.record_failure(conn, 1, 4, "truncated frame", file="/x/region_1_frame_3_scan_4.npy")
    store.record_failure(conn, 1, 4, "truncated frame")
    rows = conn.execute("SELECT attempt, file FROM job_failures ORDER BY attempt").fetchall()
    assert rows == [(1, "/x/region_1_frame_3_scan_4.npy"), (2, None)]


def test_unreachable_server_names_host_port_without_password() -> None:
    from mpitrack.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable) as caught:
        store.connect("postgresql://someone:hunter2@127.0.0.1:9/db", "x", retries=1, backoff=0.01)
    message = str(caught.value)
    assert "127.0.0.1:9" in message and "after 2 attempts" in message
    assert "hunter2" not in message


def test_the_typed_feature_columns_follow_the_jsonb(conn: psycopg.Connection) -> None:
    features = {
        "fwhm": {"omega": 1.5, "eta": 2.5},
        "intensity": 1234.5,
        "principal_variances": [4.0, 1.0],
    }
    rows = [
        TrackRow(1, 0, True, False, features),
        TrackRow(2, 0, False, False, {"position": {"omega": 1.0}, "predicted": True}),
        TrackRow(3, 0, True, False, {"intensity": "high", "principal_variances": []}),
    ]
    store.JobWriter(conn).commit([job(1, 0, rows)])
    got = conn.execute(
        "SELECT track_id, fwhm, intensity, max_variance FROM measurements ORDER BY track_id"
    ).fetchall()
    conn.commit()
    assert got == [
        (1, {"omega": 1.5, "eta": 2.5}, 1234.5, 4.0),
        (2, None, None, None),
        (3, None, None, None),
    ]
