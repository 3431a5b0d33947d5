"""What the roles need from storage: the protocols, the records they exchange, the errors.

The role loops (roles/) are written against these, as they are written
against the links of transport/base.py: they never import psycopg or the SQL
modules. storage/postgres.py implements them over PostgreSQL (store.py and
the statistics' queries); a test can hand a role any object with the same
methods.

Errors: an implementation raises `ConnectionLost` when its connection to the
server failed or was lost (the worker reconnects and runs the job again, once;
the statistics role reconnects and computes the scan again, once)
and `StoreError` for any other database error. Errors that are not the
database's (a feature that is not finite, a row outside the job's window) are
raised as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from mpitrack.stats.spotrows import SpotRow
from mpitrack.stats.summary import ScanStats, TrackSpans, Trajectory
from mpitrack.track.result import TrackRow


class StoreError(Exception):
    """A database error; its message names the database's own error class."""


class ConnectionLost(StoreError):
    """The connection to the database failed or was lost; a new one may succeed."""


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


@dataclass(frozen=True)
class Checkpoint:
    region_id: int
    scan: int
    format_version: int
    state: bytes


class JobStore(Protocol):
    """A worker's storage: checkpoints in, one atomic commit per job out."""

    def load_checkpoint(self, region: int) -> Checkpoint | None:
        """The region's committed tracker state; None before its first commit."""
        ...

    def committed_scan(self, region: int) -> int | None:
        """The region's last committed scan (reads no checkpoint state)."""
        ...

    def commit(self, result: JobResult) -> bool:
        """Write the job's rows and checkpoint in one transaction.

        False when the region's checkpoint is already at or past the job's scan:
        then nothing is written (a re-commit is a no-op).
        """
        ...

    def record_failure(self, region: int, scan: int, error: str, file: str | None = None) -> None:
        """Record a failed job (attempts of one (region, scan) are numbered)."""
        ...

    def reconnect(self) -> None:
        """Drop the connection and open a new one (after `ConnectionLost`)."""
        ...

    def close(self) -> None: ...


class ReportReads(Protocol):
    """The reads behind the report's figures."""

    def track_spans(self) -> TrackSpans: ...

    def busy_regions(self, last_scan: int, limit: int) -> list[int]:
        """Up to ``limit`` regions, most overlapping or missed rows in the newest scans first."""
        ...

    def trajectories(self, region: int, axes: Sequence[str]) -> list[Trajectory]: ...

    def regions_with_rows(self, first_scan: int | None, last_scan: int) -> list[int]:
        """Regions with a row in scans first_scan..last_scan (None: any scan), for the strips."""
        ...

    def spot_rows(
        self, region: int, axes: Sequence[str], from_scan: int | None = None
    ) -> list[SpotRow]:
        """A region's rows of scans >= from_scan (None: all), read in one snapshot."""
        ...


class StatsStore(ReportReads, Protocol):
    """The statistics role's storage: per-scan statistics computed, saved and loaded."""

    def infer_axes(self) -> tuple[str, ...]:
        """The feature axis names (omega first) from the stored rows, for runs without a config."""
        ...

    def compute_scan(self, scan: int, axes: Sequence[str]) -> ScanStats:
        """One scan's statistics from its rows, read in one consistent snapshot."""
        ...

    def save_scan_stats(self, stats: ScanStats) -> None: ...

    def load_scan_stats(self) -> dict[int, ScanStats]:
        """Every stored scan's statistics, keyed by scan number."""
        ...

    def rollback(self) -> None:
        """End a transaction that an error left open, so the next call starts clean.

        Never raises: a failure is logged.
        """
        ...

    def reconnect(self) -> None:
        """Drop the connection and open a new one (after `ConnectionLost`)."""
        ...

    def close(self) -> None: ...
