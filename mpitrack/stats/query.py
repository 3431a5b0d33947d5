"""The database reads behind the statistics: one scan's values, lifetimes, trajectories.

A scan's statistics are two queries. The first reads every row of scan s
once through the ``(scan_number)`` index and probes the UNIQUE
``(region_id, track_id, scan_number)`` index for the same track in s-1
(births) and the tracks primary key (ages); the second reads scan s-1 the same
way for the tracks that ended (deaths, lifetimes). The cost follows the two
scans' rows, however large the table grows (docs/statistics.md shows the
plans on a table of 1,000,000 rows). The spot values come from the columns
PostgreSQL derives from the JSONB as rows are written (fwhm, intensity,
max_variance: migration 005), so only a few numbers per spot cross the wire.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import psycopg

from mpitrack.stats.counts import ScanCounts, count_rows
from mpitrack.stats.spotrows import SpotRow, row_from_features
from mpitrack.stats.summary import FeatureSample, ScanStats, TrackSpans, Trajectory, scan_stats

# The feature axes when neither a config nor a stored detection names them.
DEFAULT_AXES = ("omega", "eta", "tth")


def _clean_values_sql(n_axes: int) -> str:
    """The spot values of clean rows (NULL otherwise), FWHM per axis then intensity and
    largest variance, and the FROM clause that defines ``clean`` and joins the track."""
    widths = ", ".join(
        f"CASE WHEN clean THEN (m.fwhm ->> %(axis{i})s)::float8 END" for i in range(n_axes)
    )
    return f"""{widths},
       CASE WHEN clean THEN m.intensity END,
       CASE WHEN clean THEN m.max_variance END
FROM measurements m
     CROSS JOIN LATERAL (SELECT m.detected AND NOT m.overlapping AS clean) c
     LEFT JOIN tracks t USING (region_id, track_id)"""


def scan_rows_sql(n_axes: int) -> str:
    """Every row of scan s, once: flags, whether the track continues from s-1, its first
    detection, and the spot values of clean rows (NULL otherwise)."""
    return f"""
SELECT m.region_id, m.detected, m.overlapping,
       EXISTS (SELECT 1 FROM measurements p
               WHERE p.region_id = m.region_id AND p.track_id = m.track_id
                 AND p.scan_number = %(scan)s - 1) AS continued,
       t.first_detected_scan,
       {_clean_values_sql(n_axes)}
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
    with conn.cursor(binary=True) as cur:  # binary: a third of text's parsing cost
        rows = cur.execute(scan_rows_sql(len(axes)), params).fetchall()
        died = [r[0] for r in cur.execute(DEATHS_SQL, {"scan": scan}).fetchall()]
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


def scan_range_rows_sql(n_axes: int) -> str:
    """Every row of scans first..last with its track's detected span and the spot values
    of clean rows: what `compute_scan_range` reads, once per row."""
    return f"""
SELECT m.region_id, m.track_id, m.scan_number, m.detected, m.overlapping,
       t.first_detected_scan, t.last_detected_scan,
       {_clean_values_sql(n_axes)}
WHERE m.scan_number BETWEEN %(first)s AND %(last)s
"""


def compute_scan_range(
    conn: psycopg.Connection, first: int, last: int, axes: Sequence[str]
) -> dict[int, ScanStats]:
    """The statistics of scans first..last from one read of their rows (and scan first-1's).

    The same numbers as `compute_scan` for each scan, for the offline report,
    which recomputes every scan: one statement per range instead of two per
    scan, each row read once (not twice, as "this scan" and "the previous
    one"), births and deaths found by sorting (region, track, scan) keys in
    numpy. One REPEATABLE READ snapshot for the whole range. Each scan's
    compute_seconds is the range's time divided by its scans.
    """
    start = time.perf_counter()
    params: dict[str, object] = {"first": first - 1, "last": last}
    for i, axis in enumerate(axes):
        params[f"axis{i}"] = axis  # a parameter, never spliced into the SQL text
    conn.rollback()
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        # Binary results: psycopg parses text numbers at 2-3x the cost.
        with conn.cursor(binary=True) as cur:
            rows = cur.execute(scan_range_rows_sql(len(axes)), params).fetchall()
    n_axes = len(axes)
    columns = list(zip(*rows, strict=True)) if rows else [()] * (9 + n_axes)
    region = np.array(columns[0], dtype=np.int64)
    track = np.array(columns[1], dtype=np.int64)
    scan = np.array(columns[2], dtype=np.int64)
    detected = np.array(columns[3], dtype=bool)
    overlapping = np.array(columns[4], dtype=bool)
    first_seen = np.array(columns[5], dtype=np.float64)  # None (never detected) -> NaN
    last_seen = np.array(columns[6], dtype=np.float64)
    values = [np.array(columns[7 + i], dtype=np.float64) for i in range(n_axes + 2)]
    # Sorted by (region, track, scan): a row continues the track when the row
    # before it is the same track's previous scan; a track dies after a row
    # whose next row is not the same track's next scan.
    order = np.lexsort((scan, track, region))
    same = (region[order][1:] == region[order][:-1]) & (track[order][1:] == track[order][:-1])
    consecutive = same & (scan[order][1:] == scan[order][:-1] + 1)
    continued = np.zeros(scan.size, dtype=bool)
    continued[order[1:]] = consecutive
    ends = np.ones(scan.size, dtype=bool)
    ends[order[:-1]] = ~consecutive
    lifetime = last_seen - first_seen + 1
    by_scan = np.argsort(scan, kind="stable")
    bounds = np.searchsorted(scan[by_scan], np.arange(first - 1, last + 2))
    scans = range(first, last + 1)
    out: dict[int, ScanStats] = {}
    for k, s in enumerate(scans):
        here = by_scan[bounds[k + 1] : bounds[k + 2]]
        before = by_scan[bounds[k] : bounds[k + 1]]
        died = before[ends[before]]
        clean = detected[here] & ~overlapping[here]
        counts = count_rows(
            s, region[here], detected[here], overlapping[here], continued[here], len(died)
        )
        sample = FeatureSample(
            widths={axis: values[i][here][clean] for i, axis in enumerate(axes)},
            intensity=values[n_axes][here][clean],
            max_variance=values[n_axes + 1][here][clean],
            ages=s - first_seen[here] + 1,
            lifetimes=lifetime[died],
        )
        out[s] = scan_stats(counts, sample)
    seconds = (time.perf_counter() - start) / max(len(scans), 1)
    return {s: dataclasses.replace(stats, compute_seconds=seconds) for s, stats in out.items()}


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


# Regions with any row, one index probe per region (a loose index scan of the
# (region_id, track_id) index) instead of reading every row.
_ALL_REGIONS_SQL = """
WITH RECURSIVE found AS (
    (SELECT region_id FROM measurements ORDER BY region_id LIMIT 1)
    UNION ALL
    SELECT (SELECT m.region_id FROM measurements m WHERE m.region_id > found.region_id
            ORDER BY m.region_id LIMIT 1)
    FROM found WHERE found.region_id IS NOT NULL
)
SELECT region_id FROM found WHERE region_id IS NOT NULL
"""


def regions_with_rows(
    conn: psycopg.Connection, first_scan: int | None, last_scan: int
) -> list[int]:
    """Regions with a row in scans first_scan..last_scan (None: in any scan), ascending."""
    if first_scan is None:
        rows = conn.execute(_ALL_REGIONS_SQL).fetchall()
    else:
        rows = conn.execute(
            "SELECT DISTINCT region_id FROM measurements "
            "WHERE scan_number >= %(first)s AND scan_number <= %(last)s ORDER BY region_id",
            {"first": first_scan, "last": last_scan},
        ).fetchall()
    conn.commit()
    return [int(r[0]) for r in rows]


def spot_rows(
    conn: psycopg.Connection, region: int, axes: Sequence[str], from_scan: int | None = None
) -> list[SpotRow]:
    """A region's rows (of scans >= from_scan; None: all) as the spot strips need them.

    One statement, so one snapshot; the UNIQUE (region_id, scan_number, track_id)
    index serves it. Only the feature keys the strips use cross the wire.
    """
    since = "" if from_scan is None else "AND scan_number >= %(from)s "
    rows = conn.execute(
        "SELECT track_id, scan_number, detected, overlapping, features -> 'position', "
        "features -> 'bbox', features -> 'fwhm', features -> 'overlap_with', "
        "features -> 'unusable_scan' FROM measurements "
        f"WHERE region_id = %(region)s {since}ORDER BY scan_number, track_id",
        {"region": region, "from": from_scan},
    ).fetchall()
    conn.commit()
    out = []
    for track, scan, detected, overlapping, position, bbox, fwhm, overlap_with, unusable in rows:
        features = {
            "position": position,
            "bbox": bbox,
            "fwhm": fwhm,
            "overlap_with": overlap_with,
            "unusable_scan": unusable,
        }
        try:
            out.append(
                row_from_features(int(track), int(scan), detected, overlapping, features, axes)
            )
        except ValueError as exc:
            raise ValueError(f"region {region}: {exc}") from None
    return out
