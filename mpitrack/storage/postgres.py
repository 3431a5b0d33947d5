"""The storage protocols (storage/base.py) over PostgreSQL.

Thin: the SQL lives in store.py (schema, the atomic job commit, checkpoints,
failures) and in stats/query.py and stats/storage.py (the statistics). What
this module adds is one connection per store and the translation of
psycopg's errors into the protocol's (`ConnectionLost`, `StoreError`), so the
roles never see psycopg.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence

import psycopg

from mpitrack import store
from mpitrack.stats import query
from mpitrack.stats.spotrows import SpotRow
from mpitrack.stats.storage import load_scan_stats, save_scan_stats
from mpitrack.stats.summary import ScanStats, TrackSpans, Trajectory
from mpitrack.storage.base import Checkpoint, ConnectionLost, JobResult, StoreError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _translated_errors() -> Iterator[None]:
    """psycopg's errors as the protocol's: OperationalError and InterfaceError (the
    connection failed, was lost or was broken off) are `ConnectionLost`."""
    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
        raise ConnectionLost(str(exc)) from exc
    except psycopg.Error as exc:
        raise StoreError(f"{type(exc).__name__}: {exc}") from exc


class PostgresJobStore:
    """A worker's `JobStore`: one long-lived connection and its `store.JobWriter`.

    The connection is in autocommit mode: a job's commit is one statement
    (one round trip), and the reads are single statements too.

    experiment: the experiment (its schema) the connection works in (store.connect).
    application_name names the connection in pg_stat_activity (one per worker).
    """

    def __init__(
        self,
        url: str,
        experiment: str,
        *,
        retries: int,
        application_name: str = "mpitrack",
        synchronous_commit: bool = True,
    ) -> None:
        self.url = url
        self.experiment = experiment
        self.retries = retries
        self.application_name = application_name
        self.synchronous_commit = synchronous_commit
        self._connect()

    def _connect(self) -> None:
        self.conn = store.connect(
            self.url,
            self.experiment,
            retries=self.retries,
            application_name=self.application_name,
            autocommit=True,
        )
        self.writer = store.JobWriter(self.conn, self.synchronous_commit)

    def reconnect(self) -> None:
        self.conn.close()
        self._connect()

    def close(self) -> None:
        self.conn.close()

    def load_checkpoint(self, region: int) -> Checkpoint | None:
        with _translated_errors():
            return store.load_checkpoint(self.conn, region)

    def committed_scan(self, region: int) -> int | None:
        try:
            with _translated_errors():
                return store.committed_scan(self.conn, region)
        except StoreError:
            with contextlib.suppress(psycopg.Error):
                self.conn.rollback()
            raise

    def commit(self, result: JobResult) -> bool:
        with _translated_errors():
            return bool(self.writer.commit([result]))

    def record_failure(self, region: int, scan: int, error: str, file: str | None = None) -> None:
        with _translated_errors():
            # A failed job may have left its transaction open.
            if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                self.conn.rollback()
            store.record_failure(self.conn, region, scan, error, file=file)


class PostgresStatsStore:
    """The statistics role's `StatsStore` over one connection.

    Built on a caller's connection (a report), it cannot reconnect; `open` gives
    one that owns its connection and reconnects after the server restarted.
    """

    def __init__(
        self, conn: psycopg.Connection, connect: Callable[[], psycopg.Connection] | None = None
    ) -> None:
        self.conn = conn
        self._connect = connect

    @classmethod
    def open(
        cls, url: str, experiment: str, *, retries: int, application_name: str = "mpitrack-stats"
    ) -> PostgresStatsStore:
        """A store over its own connection to experiment ``experiment`` (store.connect)."""

        def connect() -> psycopg.Connection:
            return store.connect(
                url, experiment, retries=retries, application_name=application_name
            )

        return cls(connect(), connect)

    def reconnect(self) -> None:
        if self._connect is None:
            raise ConnectionLost("the connection belongs to the caller; it cannot be renewed here")
        with contextlib.suppress(psycopg.Error):
            self.conn.close()
        self.conn = self._connect()

    def close(self) -> None:
        if self._connect is not None:
            self.conn.close()

    def infer_axes(self) -> tuple[str, ...]:
        with _translated_errors():
            return query.infer_axes(self.conn)

    def compute_scan(self, scan: int, axes: Sequence[str]) -> ScanStats:
        with _translated_errors():
            return query.compute_scan(self.conn, scan, axes)

    def save_scan_stats(self, stats: ScanStats) -> None:
        with _translated_errors():
            save_scan_stats(self.conn, stats)

    def load_scan_stats(self) -> dict[int, ScanStats]:
        with _translated_errors():
            return load_scan_stats(self.conn)

    def track_spans(self) -> TrackSpans:
        with _translated_errors():
            return query.track_spans(self.conn)

    def busy_regions(self, last_scan: int, limit: int) -> list[int]:
        with _translated_errors():
            return query.busy_regions(self.conn, last_scan, limit)

    def trajectories(self, region: int, axes: Sequence[str]) -> list[Trajectory]:
        with _translated_errors():
            return query.trajectories(self.conn, region, axes)

    def regions_with_rows(self, first_scan: int | None, last_scan: int) -> list[int]:
        with _translated_errors():
            return query.regions_with_rows(self.conn, first_scan, last_scan)

    def spot_rows(
        self, region: int, axes: Sequence[str], from_scan: int | None = None
    ) -> list[SpotRow]:
        with _translated_errors():
            return query.spot_rows(self.conn, region, axes, from_scan)

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except psycopg.Error:
            log.exception("rollback after a statistics error failed")
