"""Per-scan counts: live tracks, detections, misses, overlaps, births, deaths.

Computed from the database when a scan is complete for every region. Rows of
the newest scans may still be revised by the MHT (its N-scan window), so the
counts describe the best hypothesis at the time; `mpitrack report` recomputes
them from the final rows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg

_COUNTS_SQL = """
WITH this_scan AS (
    SELECT region_id, track_id, detected, overlapping
    FROM measurements WHERE scan_number = %(scan)s
),
previous AS (
    SELECT region_id, track_id FROM measurements WHERE scan_number = %(scan)s - 1
)
SELECT
    (SELECT count(DISTINCT region_id) FROM this_scan),
    (SELECT count(*) FROM this_scan),
    (SELECT count(*) FROM this_scan WHERE detected),
    (SELECT count(*) FROM this_scan WHERE NOT detected),
    (SELECT count(*) FROM this_scan WHERE detected AND overlapping),
    (SELECT count(*) FROM tracks WHERE first_detected_scan = %(scan)s),
    (SELECT count(*) FROM previous p
      WHERE NOT EXISTS (SELECT 1 FROM this_scan t
                        WHERE t.region_id = p.region_id AND t.track_id = p.track_id))
"""


@dataclass(frozen=True)
class ScanCounts:
    """Counts for one scan. deaths: tracks with a row in the previous scan and none in this one."""

    scan: int
    regions: int
    live_tracks: int
    detected: int
    missed: int
    overlapping: int
    births: int
    deaths: int

    def summary(self) -> str:
        return (
            f"scan {self.scan}: {self.live_tracks} live tracks in {self.regions} regions, "
            f"{self.detected} detected, {self.missed} missed, {self.overlapping} overlapping, "
            f"{self.births} births, {self.deaths} deaths"
        )


def scan_counts(conn: psycopg.Connection, scan: int) -> ScanCounts:
    row = conn.execute(_COUNTS_SQL, {"scan": scan}).fetchone()
    conn.commit()
    assert row is not None
    return ScanCounts(scan, *(int(v) for v in row))


def save_scan_counts(conn: psycopg.Connection, counts: ScanCounts) -> None:
    values = asdict(counts)
    values["scan_number"] = values.pop("scan")
    columns = ", ".join(values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in values if c != "scan_number")
    with conn.transaction():
        conn.execute(
            f"INSERT INTO scan_stats ({columns}, computed_at) "
            f"VALUES ({', '.join(f'%({c})s' for c in values)}, now()) "
            f"ON CONFLICT (scan_number) DO UPDATE SET {updates}, computed_at = now()",
            values,
        )
