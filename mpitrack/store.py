"""PostgreSQL storage: schema, atomic job commits, and the reads the runtime needs.

One job = one transaction: the region's measurement rows for the scans the
tracker decided or revised, the tracks' first/last detected scans, and the
region's checkpoint. A job whose scan is not newer than the region's committed
checkpoint is skipped inside that transaction, so re-committing it (a retried
message, a re-run after a crash) changes nothing. A job's rows travel as column
arrays to one server-side call (`commit_job`, sql/migrations/005_throughput.sql),
one round trip for a worker's job: never a statement, let alone a connection,
per row.

The roles do not call this module: they use the storage protocols
(storage/base.py), which storage/postgres.py implements on top of it.
About 430 lines, one module on purpose: a third of it is the commit's SQL,
which is read next to the code that runs it.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from mpitrack.errors import ServiceUnavailable, UsageError
from mpitrack.storage.base import Checkpoint, JobResult
from mpitrack.urls import redact_text, redact_url

log = logging.getLogger(__name__)


def _sql_dir() -> Path:
    """Where the schema and migrations are: mpitrack/sql/ in an installed wheel (the
    build copies them there, see setup.py), else the top-level sql/ of the source
    tree, which is their source of truth (a checkout, an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "sql"
    return installed if (installed / "schema.sql").is_file() else package.parent / "sql"


SQL_DIR = _sql_dir()


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
    where = f"{params.get('host') or 'local socket'}:{params.get('port') or 5432}"
    return redact_text(where, url)


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
    url: str,
    experiment: str | None,
    retries: int = 5,
    backoff: float = 0.5,
    application_name: str = "mpitrack",
    autocommit: bool = False,
) -> psycopg.Connection:
    """A connection that works inside experiment ``experiment``'s schema.

    This is how experiments share a database (docs/admin.md): every table of
    an experiment lives in the PostgreSQL schema named after it (the config's
    ``run``), and every connection sets ``search_path`` to that schema alone
    when it opens, so all SQL here, in stats/ and in evaluate.py names tables
    unqualified and reaches one experiment's tables and no other's. (A new
    connection after a reconnect is scoped the same way: it comes from here.)
    ``autocommit``: each statement is its own transaction unless one is opened
    (a worker's connection, so that a job's commit is one round trip).

    Connecting retries ``retries`` times with exponential backoff, then raises
    ServiceUnavailable naming the server (host and port, never a password).
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise UsageError(
            f"invalid database URL {redact_url(url)}: {redact_text(str(exc), url)}"
        ) from None
    options = " ".join(filter(None, [params.get("options"), _search_path_option(experiment)]))
    last_error: Exception | None = None
    for attempt in range(retries + 1):
        try:
            return psycopg.connect(
                url,
                application_name=application_name,
                connect_timeout=10,
                options=options,
                autocommit=autocommit,
            )
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
            raise UsageError(
                f"invalid database URL {redact_url(url)}: {redact_text(str(exc), url)}"
            ) from None
    reason = str(last_error).strip().splitlines()[0] if last_error else "unknown error"
    raise ServiceUnavailable(
        f"cannot connect to PostgreSQL at {describe_server(url)} ({redact_url(url)}) "
        f"after {retries + 1} attempts: {redact_text(reason, url)}"
    )


def _search_path_option(experiment: str | None) -> str:
    """libpq's ``options`` that make ``experiment``'s schema the only one searched."""
    if experiment is None:
        return "-c search_path=pg_catalog"
    quoted = '"' + experiment.replace('"', '""') + '"'
    escaped = quoted.replace("\\", "\\\\").replace(" ", "\\ ")
    return f"-c search_path={escaped}"


def experiment_of(conn: psycopg.Connection) -> str:
    """The experiment whose schema ``conn`` works in (see `connect`).

    Raises ValueError for a connection that `connect` did not scope, so that
    nothing is ever created in, or read from, a schema shared by everyone.
    """
    row = conn.execute("SELECT current_setting('search_path')").fetchone()
    path = str(row[0]) if row else ""
    match = re.fullmatch(r'"((?:[^"]|"")+)"', path)
    if match is None:
        raise ValueError(
            f"connection has search_path {path!r}, not one experiment's schema "
            "(connect with mpitrack.store.connect)"
        )
    return match.group(1).replace('""', '"')


def experiments(conn: psycopg.Connection) -> list[str]:
    """The experiments (schemas holding mpitrack's tables) of the connection's database."""
    rows = conn.execute(
        "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.relname = 'tracker_checkpoints' AND c.relkind = 'r' ORDER BY 1"
    ).fetchall()
    conn.commit()
    return [str(name) for (name,) in rows]


def apply_schema(conn: psycopg.Connection, axes: Sequence[str] | None = None) -> int:
    """Apply sql/schema.sql and any sql/migrations/*.sql not yet applied to the
    experiment's schema (created if need be), then the typed results view for
    the feature axes (the config's ``frames.axes``; None keeps those recorded,
    see results/views.py); return the version.

    Safe to call concurrently and repeatedly: an advisory lock serialises
    callers and every statement is idempotent.
    """
    # Here, not at the top: mpitrack.results (the API) imports this module.
    from mpitrack.results.views import ensure_views

    migrations = sorted((SQL_DIR / "migrations").glob("[0-9][0-9][0-9]_*.sql"))
    experiment = experiment_of(conn)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(experiment)))
        conn.execute((SQL_DIR / "schema.sql").read_text(encoding="utf-8"))
        version = schema_version(conn)
        for path in migrations:
            number = int(path.name[:3])
            if number > version:
                log.info("applying migration %s", path.name)
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (number,))
                version = number
        ensure_views(conn, axes)
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


# One job's commit: the server-side function of sql/migrations/005_throughput.sql.
# Binary parameters (%b): psycopg's text format quotes and escapes every JSON
# string of the features array in Python, about 2 ms a job; binary sends them as
# they are.
COMMIT_JOB_SQL = (
    "SELECT commit_job(%b, %b, %b, %b::integer[], %b::integer[], %b::boolean[], "
    "%b::boolean[], %b::text[], %b, %b)"
)


class JobWriter:
    """Commits job results over one long-lived connection.

    ``commit([job, ...])`` writes any number of jobs (of distinct regions) in
    one transaction and returns the jobs it actually wrote; jobs already
    committed (their scan is not newer than the region's checkpoint) are left
    out, which is what makes a re-commit a no-op.

    A job is one call of the server-side ``commit_job`` (migration 005). On
    an autocommit connection (a worker's, `PostgresJobStore`) a one-job
    commit is that one statement, its own transaction: one round trip.
    Otherwise (several jobs, or a caller's transaction around the commit)
    the calls run inside ``conn.transaction()``. docs/architecture.md
    ("Commits") has the measurements behind this shape.

    synchronous_commit=False lets a commit return before its WAL reaches the
    disk. That is safe for mpitrack's guarantees: a transaction is still
    atomic, and an operating-system crash can only lose a suffix of the most
    recent commits, whose jobs the next run redoes from the (equally older)
    checkpoints. It removes one fsync per job, the largest cost of a commit.
    """

    def __init__(self, conn: psycopg.Connection, synchronous_commit: bool = True) -> None:
        self.conn = conn
        if not synchronous_commit:
            conn.execute("SET synchronous_commit TO off")
            conn.commit()

    def commit(self, jobs: Sequence[JobResult]) -> list[JobResult]:
        regions = [job.region_id for job in jobs]
        if len(set(regions)) != len(regions):
            raise ValueError("one commit holds at most one job per region")
        if not jobs:
            return []
        # Validate and encode everything before anything is sent. Calls go in
        # region order: each locks its region's row, so two batches cannot
        # deadlock.
        ordered = sorted(jobs, key=lambda job: job.region_id)
        params = [commit_params(job) for job in ordered]
        if self.conn.autocommit and len(params) == 1:
            # One statement is its own transaction: one round trip.
            results = [self._call(params[0])]
        else:
            with self.conn.transaction():
                results = [self._call(p) for p in params]
        for job, wrote in zip(ordered, results, strict=True):
            if not wrote:
                log.info(
                    "region %d scan %d already committed (checkpoint at or past it): skipped",
                    job.region_id,
                    job.scan,
                )
        written = {job.region_id for job, wrote in zip(ordered, results, strict=True) if wrote}
        return [job for job in jobs if job.region_id in written]

    def _call(self, params: tuple[Any, ...]) -> bool:
        row = self.conn.execute(COMMIT_JOB_SQL, params).fetchone()
        return bool(row and row[0])


def commit_params(job: JobResult) -> tuple[Any, ...]:
    """``commit_job``'s arguments for one job: its rows as column arrays, features as JSON
    text. Raises for a row outside the job's open window or a feature that is not finite."""
    tracks, scans, detected, overlapping, features = [], [], [], [], []
    for row in job.rows:
        if not job.first_open_scan <= row.scan <= job.scan:
            raise ValueError(
                f"region {job.region_id} job scan {job.scan}: row for scan "
                f"{row.scan} is outside the open window "
                f"{job.first_open_scan}..{job.scan}"
            )
        tracks.append(row.track_id)
        scans.append(row.scan)
        detected.append(row.detected)
        overlapping.append(row.overlapping)
        where = f"region {job.region_id} scan {row.scan} track {row.track_id}"
        features.append(encode_features(row.features, where))
    return (
        job.region_id,
        job.scan,
        job.first_open_scan,
        tracks,
        scans,
        detected,
        overlapping,
        features,
        job.format_version,
        job.checkpoint,
    )


def load_checkpoint(conn: psycopg.Connection, region_id: int) -> Checkpoint | None:
    row = conn.execute(
        "SELECT scan_number, format_version, state FROM tracker_checkpoints WHERE region_id = %s",
        (region_id,),
    ).fetchone()
    conn.commit()
    if row is None:
        return None
    return Checkpoint(region_id, int(row[0]), int(row[1]), bytes(row[2]))


def committed_scan(conn: psycopg.Connection, region_id: int) -> int | None:
    """The region's last committed scan (one row; `committed_scans` reads every region)."""
    row = conn.execute(
        "SELECT scan_number FROM tracker_checkpoints WHERE region_id = %s", (region_id,)
    ).fetchone()
    conn.commit()
    return None if row is None else int(row[0])


def committed_scans(conn: psycopg.Connection) -> dict[int, int]:
    """The last committed scan of every region that has a checkpoint."""
    rows = conn.execute("SELECT region_id, scan_number FROM tracker_checkpoints").fetchall()
    conn.commit()
    return {int(r): int(s) for r, s in rows}


def checkpoint_formats(conn: psycopg.Connection) -> dict[int, tuple[int, int]]:
    """(last committed scan, checkpoint format version) of every region that has one."""
    rows = conn.execute(
        "SELECT region_id, scan_number, format_version FROM tracker_checkpoints"
    ).fetchall()
    conn.commit()
    return {int(r): (int(s), int(v)) for r, s, v in rows}


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


def failed_regions(conn: psycopg.Connection) -> dict[int, int]:
    """Regions with failed jobs not retried yet: region -> its earliest failed scan."""
    rows = conn.execute(
        "SELECT region_id, min(scan_number) FROM job_failures WHERE retried_at IS NULL "
        "GROUP BY region_id"
    ).fetchall()
    conn.commit()
    return {int(region): int(scan) for region, scan in rows}


def reset_regions(conn: psycopg.Connection, regions: Sequence[int], stats_from: int) -> None:
    """Forget what ``regions`` committed (rows, tracks, checkpoints), mark their
    failures retried, and drop the statistics of scans ``stats_from`` and later: the
    next run tracks those regions again from their first scan (a region's scans
    depend on each other, so a scan cannot be redone alone) and recomputes the
    statistics their new rows change. One transaction."""
    regions = list(regions)
    with conn.transaction():
        conn.execute("DELETE FROM measurements WHERE region_id = ANY(%s)", (regions,))
        conn.execute("DELETE FROM tracks WHERE region_id = ANY(%s)", (regions,))
        conn.execute("DELETE FROM tracker_checkpoints WHERE region_id = ANY(%s)", (regions,))
        conn.execute(
            "UPDATE job_failures SET retried_at = now() "
            "WHERE region_id = ANY(%s) AND retried_at IS NULL",
            (regions,),
        )
        conn.execute("DELETE FROM scan_stats WHERE scan_number >= %s", (stats_from,))
