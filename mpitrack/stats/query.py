"""The database reads behind the statistics: one scan's values, lifetimes, trajectories.

A scan's statistics are two queries. The first reads every row of scan s
once through the ``(scan_number)`` index and probes the UNIQUE
``(region_id, track_id, scan_number)`` index for the same track in s-1
(births) and the tracks primary key (ages); the second reads scan s-1 the same
way for the tracks that ended (deaths, lifetimes). The cost follows the two
scans' rows, however large the table grows (docs/statistics.md shows the
plans on a table of 1,000,000 rows). Values are pulled out of the JSONB in
SQL so only a few numbers per spot cross the wire.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from mpitrack.stats.counts import ScanCounts, count_rows
from mpitrack.stats.summary import FeatureSample, ScanStats, scan_stats

DEFAULT_AXES = ("omega", "eta", "tth")


def scan_rows_sql(n_axes: int) -> str:
    """Every row of scan s, once: flags, whether the track continues from s-1, its first
    detection, and the spot values of clean rows (NULL otherwise)."""
    widths = ", ".join(
        f"CASE WHEN clean THEN (m.features -> 'fwhm' ->> %(axis{i})s)::float8 END"
        for i in range(n_axes)
    )
    return f"""
SELECT m.region_id, m.detected, m.overlapping,
       EXISTS (SELECT 1 FROM measurements p
               WHERE p.region_id = m.region_id AND p.track_id = m.track_id
                 AND p.scan_number = %(scan)s - 1) AS continued,
       t.first_detected_scan,
       {widths},
       CASE WHEN clean THEN (m.features ->> 'intensity')::float8 END,
       CASE WHEN clean THEN (m.features -> 'principal_variances' ->> 0)::float8 END
FROM measurements m
     CROSS JOIN LATERAL (SELECT m.detected AND NOT m.overlapping AS clean) c
     LEFT JOIN tracks t USING (region_id, track_id)
WHERE m.scan_number = %(scan)s
"""


# Tracks with a row in s-1 and none in s (deaths), with their detected span.
DEATHS_SQL = """
SELECT t.last_detected_scan - t.first_detected_scan + 1
FROM measurements p LEFT JOIN tracks t USING (region_id, track_id)
WHERE p.scan_number = %(scan)s - 1
  AND NOT EXISTS (SELECT 1 FROM measurements m
                  WHERE m.region_id = p.region_id AND m.track_id = p.track_id
                    AND m.scan_number = %(scan)s)
"""


def _column(rows: list[tuple], index: int) -> np.ndarray:
    return np.array([r[index] for r in rows], dtype=np.float64)


def read_scan(
    conn: psycopg.Connection, scan: int, axes: Sequence[str]
) -> tuple[ScanCounts, FeatureSample]:
    """One scan's counts and per-spot values: two index-driven queries."""
    params: dict[str, object] = {"scan": scan}
    for i, axis in enumerate(axes):
        params[f"axis{i}"] = axis  # a parameter, never spliced into the SQL text
    rows = conn.execute(scan_rows_sql(len(axes)), params).fetchall()
    died = [r[0] for r in conn.execute(DEATHS_SQL, {"scan": scan}).fetchall()]
    detected = np.array([r[1] for r in rows], dtype=bool)
    overlapping = np.array([r[2] for r in rows], dtype=bool)
    counts = count_rows(
        scan,
        np.array([r[0] for r in rows], dtype=np.int64),
        detected,
        overlapping,
        np.array([r[3] for r in rows], dtype=bool),
        deaths=len(died),
    )
    clean = detected & ~overlapping
    first = np.array([np.nan if r[4] is None else r[4] for r in rows], dtype=np.float64)
    base = 5
    sample = FeatureSample(
        widths={axis: _column(rows, base + i)[clean] for i, axis in enumerate(axes)},
        intensity=_column(rows, base + len(axes))[clean],
        max_variance=_column(rows, base + len(axes) + 1)[clean],
        ages=scan - first + 1,
        lifetimes=np.array([np.nan if v is None else v for v in died], dtype=np.float64),
    )
    return counts, sample


def compute_scan(conn: psycopg.Connection, scan: int, axes: Sequence[str]) -> ScanStats:
    """Read and summarise one scan in one read-only snapshot.

    REPEATABLE READ makes the counts, the spot values and the track spans agree
    with each other even while workers commit revisions of this scan.
    """
    start = time.perf_counter()
    conn.rollback()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        counts, sample = read_scan(conn, scan, axes)
    return scan_stats(counts, sample, time.perf_counter() - start)


def infer_axes(conn: psycopg.Connection) -> tuple[str, ...]:
    """The feature axis names (omega first) from one stored detection, for runs without a config.

    JSONB does not keep key order, so the two frame axes come back sorted; pass
    the config's ``frames.axes`` wherever the order matters.
    """
    row = conn.execute(
        "SELECT features -> 'fwhm' FROM measurements WHERE detected AND features ? 'fwhm' LIMIT 1"
    ).fetchone()
    conn.commit()
    if not row or not isinstance(row[0], dict):
        return DEFAULT_AXES
    others = sorted(k for k in row[0] if k != "omega")
    return ("omega", *others)


def scan_range(conn: psycopg.Connection) -> tuple[int, int] | None:
    """First and last scan with any measurement row (two index probes)."""
    row = conn.execute("SELECT min(scan_number), max(scan_number) FROM measurements").fetchone()
    conn.commit()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1])


@dataclass(frozen=True)
class TrackSpans:
    """Every track's detected span: lifetime in scans, and whether it is still alive.

    alive: the track has a row in the newest scan in the table (so its
    lifetime is a lower bound, not a final value).
    """

    lifetimes: np.ndarray
    alive: np.ndarray


def track_spans(conn: psycopg.Connection) -> TrackSpans:
    """Lifetimes of all tracks (the tracks table is one row per track: small next to rows)."""
    rows = conn.execute(
        """
        WITH newest AS (SELECT max(scan_number) AS scan FROM measurements)
        SELECT t.last_detected_scan - t.first_detected_scan + 1,
               EXISTS (SELECT 1 FROM measurements m
                       WHERE m.region_id = t.region_id AND m.track_id = t.track_id
                         AND m.scan_number = (SELECT scan FROM newest))
        FROM tracks t WHERE t.first_detected_scan IS NOT NULL
        """
    ).fetchall()
    conn.commit()
    return TrackSpans(
        lifetimes=np.array([r[0] for r in rows], dtype=np.int64),
        alive=np.array([bool(r[1]) for r in rows], dtype=bool),
    )


@dataclass(frozen=True)
class Trajectory:
    """One track's rows in scan order: positions (n, 3) in voxels, axes as the query asked."""

    region: int
    track: int
    scans: np.ndarray
    positions: np.ndarray
    detected: np.ndarray
    overlapping: np.ndarray


def trajectories(conn: psycopg.Connection, region: int, axes: Sequence[str]) -> list[Trajectory]:
    """A region's tracks, read through the UNIQUE (region_id, track_id, scan_number) index."""
    params = {"region": region, **{f"axis{i}": a for i, a in enumerate(axes)}}
    coords = ", ".join(
        f"(features -> 'position' ->> %(axis{i})s)::float8" for i in range(len(axes))
    )
    rows = conn.execute(
        f"SELECT track_id, scan_number, detected, overlapping, {coords} "
        "FROM measurements WHERE region_id = %(region)s ORDER BY track_id, scan_number",
        params,
    ).fetchall()
    conn.commit()
    out: list[Trajectory] = []
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i][0] != rows[start][0]:
            chunk = rows[start:i]
            out.append(
                Trajectory(
                    region=region,
                    track=int(chunk[0][0]),
                    scans=np.array([r[1] for r in chunk], dtype=np.int64),
                    positions=np.array([r[4:] for r in chunk], dtype=np.float64).reshape(
                        len(chunk), len(axes)
                    ),
                    detected=np.array([r[2] for r in chunk], dtype=bool),
                    overlapping=np.array([r[3] for r in chunk], dtype=bool),
                )
            )
            start = i
    return out


def busy_regions(
    conn: psycopg.Connection, last_scan: int, limit: int, recent: int = 5
) -> list[int]:
    """Up to ``limit`` regions to plot: most overlapping or missed rows in the last scans first.

    Reads only the newest ``recent`` scans (scan index), so choosing costs the
    same on a table of any length; regions without trouble fill the rest in id
    order.
    """
    rows = conn.execute(
        """
        SELECT r.region_id
        FROM regions r LEFT JOIN (
            SELECT region_id, count(*) FILTER (WHERE overlapping OR NOT detected) AS trouble
            FROM measurements
            WHERE scan_number > %(last)s - %(recent)s AND scan_number <= %(last)s
            GROUP BY region_id
        ) m USING (region_id)
        ORDER BY coalesce(m.trouble, 0) DESC, r.region_id
        LIMIT %(limit)s
        """,
        {"last": last_scan, "recent": recent, "limit": limit},
    ).fetchall()
    conn.commit()
    return [int(r[0]) for r in rows]
