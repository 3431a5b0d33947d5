"""PostgreSQL storage: schema, atomic job commits, and the reads the runtime needs.

One job = one transaction: the region's measurement rows for the scans the
tracker decided or revised, the tracks' first/last detected scans, and the
region's checkpoint. A job whose scan is not newer than the region's committed
checkpoint is skipped inside that transaction, so re-committing it (a retried
message, a re-run after a crash) changes nothing. Rows travel by COPY into a
temporary staging table, then one INSERT ... ON CONFLICT moves them: never a
statement, let alone a connection, per row.
"""

from __future__ import annotations

import json
import logging
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mpitrack.errors import ServiceUnavailable, UsageError
from mpitrack.track.result import TrackRow
from mpitrack.urls import redact_url

log = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"


def _latest_schema_version() -> int:
    numbers = [int(p.name[:3]) for p in (SQL_DIR / "migrations").glob("[0-9][0-9][0-9]_*.sql")]
    return max([1, *numbers])


SCHEMA_VERSION = _latest_schema_version()
TABLES = (
    "regions",
    "tracks",
    "measurements",
    "tracker_checkpoints",
    "job_failures",
    "scan_stats",
    "scan_distributions",
)
_SCHEMA_LOCK_KEY = 0x6D70697472  # pg_advisory_xact_lock key: "mpitr"


def describe_server(url: str) -> str:
    """'host:port' (or the socket directory) of a PostgreSQL URL or DSN, for error messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    return f"{params.get('host') or 'local socket'}:{params.get('port') or 5432}"


def with_database(url: str, dbname: str) -> str:
    """The same server's connection string for another database."""
    return make_conninfo(url, dbname=dbname)


def create_database(server_url: str, prefix: str = "mpitrack") -> str:
    """A new empty database with a unique name on the server of ``server_url``; its URL.

    For tests and benchmarks, which each want a clean database on one server.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return with_database(server_url, name)


def drop_database(server_url: str, url: str) -> None:
    """Drop the database of ``url`` (connections to it are closed first)."""
    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def connect(
    url: str, retries: int = 5, backoff: float = 0.5, application_name: str = "mpitrack"
) -> psycopg.Connection:
    """Connect with bounded retries and exponential backoff.

    Raises ServiceUnavailable naming the server (host and port, the URL
    without its password) after ``retries`` further attempts.
    """
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return psycopg.connect(url, application_name=application_name, connect_timeout=10)
        except psycopg.OperationalError as exc:
            last_error = exc
            if attempt < retries:
                delay = backoff * 2**attempt
                log.warning(
                    "PostgreSQL at %s not reachable (attempt %d/%d), retrying in %.1f s",
                    describe_server(url),
                    attempt + 1,
                    retries + 1,
                    delay,
                )
                time.sleep(delay)
        except psycopg.ProgrammingError as exc:
            raise UsageError(f"invalid database URL {redact_url(url)}: {exc}") from None
    reason = str(last_error).strip().splitlines()[0] if last_error else "unknown error"
    raise ServiceUnavailable(
        f"cannot connect to PostgreSQL at {describe_server(url)} ({redact_url(url)}) "
        f"after {retries + 1} attempts: {reason}"
    )


def apply_schema(conn: psycopg.Connection) -> int:
    """Apply sql/schema.sql and any sql/migrations/*.sql not yet applied; return the version.

    Safe to call concurrently and repeatedly: an advisory lock serialises
    callers and every statement is idempotent.
    """
    migrations = sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute((SQL_DIR / "schema.sql").read_text(encoding="utf-8"))
        version = schema_version(conn)
        for path in migrations:
            number = int(path.name[:3])
            if number > version:
                log.info("applying migration %s", path.name)
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
                version = number
    return version


def schema_version(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    got = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(got[0]) if got else 0


def table_counts(conn: psycopg.Connection) -> dict[str, int | None]:
    """Row counts per table (None for a table that does not exist)."""
    counts: dict[str, int | None] = {}
    for table in TABLES:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if exists and exists[0]:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        else:
            counts[table] = None
    return counts


def ensure_regions(conn: psycopg.Connection, regions: Iterable[tuple[int, str]]) -> None:
    """Insert or update the region rows (id, description)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO regions (region_id, description) VALUES (%s, %s) "
            "ON CONFLICT (region_id) DO UPDATE SET description = excluded.description "
            "WHERE regions.description IS DISTINCT FROM excluded.description",
            list(regions),
        )


@dataclass(frozen=True)
class JobResult:
    """Everything one (region, scan) job commits.

    rows replace the stored rows of scans first_open_scan..scan (inclusive) of
    the region; checkpoint is the tracker state after ``scan``.
    """

    region_id: int
    scan: int
    first_open_scan: int
    rows: Sequence[TrackRow]
    checkpoint: bytes
    format_version: int


class NonFiniteFeature(ValueError):
    """A feature value is NaN or infinite: JSON (and JSONB) cannot hold it."""


def encode_features(features: dict[str, Any], where: str) -> str:
    """JSON text of a features dict; NaN and infinity are refused, naming the key."""
    try:
        return json.dumps(features, allow_nan=False, separators=(",", ":"))
    except ValueError:
        key = _non_finite_key(features) or "?"
        raise NonFiniteFeature(
            f"{where}: feature {key} is not finite; JSON has no NaN or infinity"
        ) from None


def _non_finite_key(value: Any, path: str = "") -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<value>"
    if isinstance(value, dict):
        items: Iterable[tuple[str, Any]] = (
            (f"{path}.{k}" if path else str(k), v) for k, v in value.items()
        )
    elif isinstance(value, list | tuple):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for sub_path, sub in items:
        found = _non_finite_key(sub, sub_path)
        if found:
            return found
    return None


_STAGING_DDL = """
CREATE TEMP TABLE IF NOT EXISTS staging_measurements (
    region_id integer NOT NULL, track_id integer NOT NULL, scan_number integer NOT NULL,
    detected boolean NOT NULL, overlapping boolean NOT NULL, features jsonb NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS staging_windows (
    region_id integer NOT NULL, first_scan integer NOT NULL, last_scan integer NOT NULL
) ON COMMIT DELETE ROWS;
CREATE TEMP TABLE IF NOT EXISTS affected_tracks (
    region_id integer NOT NULL, track_id integer NOT NULL
) ON COMMIT DELETE ROWS;
"""

# The statements of one commit, in order. Windows name the scans whose rows the
# jobs replace; rows outside the new answer are deleted, the rest upserted,
# and only rows that really change are written (re-commits touch nothing).
_COMMIT_SQL = (
    """
    INSERT INTO tracks (region_id, track_id)
    SELECT DISTINCT region_id, track_id FROM staging_measurements
    ON CONFLICT DO NOTHING
    """,
    # Rows of the open window that the new answer no longer has; their tracks
    # may be left without rows (dropped below).
    """
    WITH gone AS (
        DELETE FROM measurements m
        USING staging_windows w
        WHERE m.region_id = w.region_id
          AND m.scan_number BETWEEN w.first_scan AND w.last_scan
          AND NOT EXISTS (
              SELECT 1 FROM staging_measurements s
              WHERE s.region_id = m.region_id AND s.track_id = m.track_id
                AND s.scan_number = m.scan_number)
        RETURNING m.region_id, m.track_id
    )
    INSERT INTO affected_tracks SELECT DISTINCT region_id, track_id FROM gone
    """,
    """
    INSERT INTO measurements (region_id, track_id, scan_number, detected, overlapping, features)
    SELECT region_id, track_id, scan_number, detected, overlapping, features
    FROM staging_measurements
    ON CONFLICT (region_id, scan_number, track_id) DO UPDATE
    SET detected = excluded.detected, overlapping = excluded.overlapping,
        features = excluded.features
    WHERE (measurements.detected, measurements.overlapping, measurements.features)
          IS DISTINCT FROM (excluded.detected, excluded.overlapping, excluded.features)
    """,
    # First/last detected scans, incrementally. The window ends at the job's
    # scan, the region's newest, and rows before it are final, so: the first
    # detection stays if it precedes the window, else it is the window's
    # first; the last is the window's last, else the stored one if it precedes
    # the window, else (rare: the window lost its detections) an index probe.
    """
    WITH spans AS (
        SELECT region_id, track_id,
               min(scan_number) FILTER (WHERE detected) AS first_in_window,
               max(scan_number) FILTER (WHERE detected) AS last_in_window
        FROM staging_measurements GROUP BY region_id, track_id
        UNION ALL
        SELECT DISTINCT a.region_id, a.track_id, NULL::integer, NULL::integer
        FROM affected_tracks a
        WHERE NOT EXISTS (SELECT 1 FROM staging_measurements s
                          WHERE s.region_id = a.region_id AND s.track_id = a.track_id)
    ),
    spans_now AS (
        SELECT t.region_id, t.track_id,
               t.first_detected_scan AS old_first, t.last_detected_scan AS old_last,
               CASE WHEN t.first_detected_scan < w.first_scan THEN t.first_detected_scan
                    ELSE s.first_in_window END AS new_first,
               CASE WHEN s.last_in_window IS NOT NULL THEN s.last_in_window
                    WHEN t.last_detected_scan < w.first_scan THEN t.last_detected_scan
                    ELSE (SELECT max(m.scan_number) FROM measurements m
                          WHERE m.region_id = t.region_id AND m.track_id = t.track_id
                            AND m.detected AND m.scan_number < w.first_scan)
               END AS new_last
        FROM tracks t
        JOIN spans s USING (region_id, track_id)
        JOIN staging_windows w USING (region_id)
    )
    UPDATE tracks t
    SET first_detected_scan = n.new_first, last_detected_scan = n.new_last
    FROM spans_now n
    WHERE t.region_id = n.region_id AND t.track_id = n.track_id
      AND (n.old_first, n.old_last) IS DISTINCT FROM (n.new_first, n.new_last)
    """,
    """
    DELETE FROM tracks t
    USING (SELECT DISTINCT region_id, track_id FROM affected_tracks) a
    WHERE t.region_id = a.region_id AND t.track_id = a.track_id
      AND NOT EXISTS (SELECT 1 FROM measurements m
                      WHERE m.region_id = t.region_id AND m.track_id = t.track_id)
    """,
)


class JobWriter:
    """Commits job results over one long-lived connection.

    ``commit([job, ...])`` writes any number of jobs (of distinct regions) in
    one transaction and returns the jobs it actually wrote; jobs already
    committed (their scan is not newer than the region's checkpoint) are left
    out, which is what makes a re-commit a no-op.

    synchronous_commit=False lets a commit return before its WAL reaches the
    disk. That is safe for mpitrack's guarantees: a transaction is still
    atomic, and an operating-system crash can only lose a suffix of the most
    recent commits, whose jobs the next run redoes from the (equally older)
    checkpoints. It removes one fsync per job, the largest cost of a commit.
    """

    def __init__(self, conn: psycopg.Connection, synchronous_commit: bool = True) -> None:
        self.conn = conn
        conn.execute(_STAGING_DDL)
        if not synchronous_commit:
            conn.execute("SET synchronous_commit TO off")
        conn.commit()

    def commit(self, jobs: Sequence[JobResult]) -> list[JobResult]:
        regions = [job.region_id for job in jobs]
        if len(set(regions)) != len(regions):
            raise ValueError("one commit holds at most one job per region")
        if not jobs:
            return []
        with self.conn.transaction(), self.conn.cursor() as cur:
            committed = dict(
                cur.execute(
                    "SELECT region_id, scan_number FROM tracker_checkpoints "
                    "WHERE region_id = ANY(%s) FOR UPDATE",
                    (regions,),
                ).fetchall()
            )
            fresh = [j for j in jobs if committed.get(j.region_id, -1) < j.scan]
            for job in jobs:
                if committed.get(job.region_id, -1) >= job.scan:
                    log.info(
                        "region %d scan %d already committed (checkpoint at scan %d): skipped",
                        job.region_id,
                        job.scan,
                        committed[job.region_id],
                    )
            if not fresh:
                return []
            with cur.copy(
                "COPY staging_windows (region_id, first_scan, last_scan) FROM STDIN"
            ) as copy:
                for job in fresh:
                    copy.write_row((job.region_id, job.first_open_scan, job.scan))
            with cur.copy(
                "COPY staging_measurements "
                "(region_id, track_id, scan_number, detected, overlapping, features) FROM STDIN"
            ) as copy:
                for job in fresh:
                    for row in job.rows:
                        if not job.first_open_scan <= row.scan <= job.scan:
                            raise ValueError(
                                f"region {job.region_id} job scan {job.scan}: row for scan "
                                f"{row.scan} is outside the open window "
                                f"{job.first_open_scan}..{job.scan}"
                            )
                        where = f"region {job.region_id} scan {row.scan} track {row.track_id}"
                        copy.write_row(
                            (
                                job.region_id,
                                row.track_id,
                                row.scan,
                                row.detected,
                                row.overlapping,
                                encode_features(row.features, where),
                            )
                        )
            # Temporary tables have no statistics until analysed; without
            # them the planner guesses thousands of rows and scans whole
            # tables, so a commit would slow down as the tables grow.
            cur.execute("ANALYZE staging_windows, staging_measurements")
            for statement in _COMMIT_SQL:
                cur.execute(statement)
            cur.executemany(
                "INSERT INTO tracker_checkpoints (region_id, scan_number, format_version, state) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (region_id) DO UPDATE "
                "SET scan_number = excluded.scan_number, format_version = excluded.format_version, "
                "state = excluded.state, committed_at = now()",
                [(j.region_id, j.scan, j.format_version, j.checkpoint) for j in fresh],
            )
        return fresh


@dataclass(frozen=True)
class Checkpoint:
    region_id: int
    scan: int
    format_version: int
    state: bytes


def load_checkpoint(conn: psycopg.Connection, region_id: int) -> Checkpoint | None:
    row = conn.execute(
        "SELECT scan_number, format_version, state FROM tracker_checkpoints WHERE region_id = %s",
        (region_id,),
    ).fetchone()
    conn.commit()
    if row is None:
        return None
    return Checkpoint(region_id, int(row[0]), int(row[1]), bytes(row[2]))


def committed_scans(conn: psycopg.Connection) -> dict[int, int]:
    """The last committed scan of every region that has a checkpoint."""
    rows = conn.execute("SELECT region_id, scan_number FROM tracker_checkpoints").fetchall()
    conn.commit()
    return {int(r): int(s) for r, s in rows}


def record_failure(
    conn: psycopg.Connection, region_id: int, scan: int, error: str, file: str | None = None
) -> None:
    """Record a failed job; attempts of the same (region, scan) are numbered."""
    with conn.transaction():
        conn.execute(
            "INSERT INTO job_failures (region_id, scan_number, attempt, file, error) "
            "SELECT %s, %s, coalesce(max(attempt), 0) + 1, %s, %s FROM job_failures "
            "WHERE region_id = %s AND scan_number = %s",
            (region_id, scan, file, error, region_id, scan),
        )
