"""The statistics role: per-scan statistics as each scan completes for every region."""

from __future__ import annotations

import logging

import psycopg

from mpitrack.stats.counts import save_scan_counts, scan_counts
from mpitrack.transport.base import StatsLink

log = logging.getLogger(__name__)


class ScanStatistics:
    """Computes, stores and logs one scan's statistics; callable as ``stats(scan)``."""

    def __init__(self, conn: psycopg.Connection) -> None:
        self.conn = conn

    def __call__(self, scan: int) -> None:
        try:
            counts = scan_counts(self.conn, scan)
            save_scan_counts(self.conn, counts)
        except psycopg.Error as exc:
            # Statistics are derived data: a failure is logged, the run goes on.
            log.error("statistics for scan %d failed: %s", scan, exc)
            self.conn.rollback()
            return
        log.info("%s", counts.summary())


def serve(stats: ScanStatistics, link: StatsLink) -> int:
    """Compute statistics for every scan the dispatcher reports; return how many."""
    count = 0
    while (scan := link.next_scan()) is not None:
        stats(scan)
        count += 1
    return count
