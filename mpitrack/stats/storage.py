"""scan_stats and scan_distributions: save one scan's statistics, load them all back.

A scan's row and its distributions are replaced in one transaction, so a
reader never sees the counts of one computation next to the percentiles of
another. Loading them back lets a restarted statistics role (or a report)
draw the whole run without recomputing the scans it already summarised.
"""

from __future__ import annotations

from collections import defaultdict

import psycopg

from mpitrack.stats.summary import Distribution, Histogram, ScanStats

_COUNT_COLUMNS = (
    "regions",
    "live_tracks",
    "detected",
    "missed",
    "overlapping",
    "births",
    "deaths",
)


def save_scan_stats(conn: psycopg.Connection, stats: ScanStats) -> None:
    values = {"scan_number": stats.scan, **{c: getattr(stats, c) for c in _COUNT_COLUMNS}}
    values["overlap_fraction"] = stats.overlap_fraction
    values["compute_seconds"] = stats.compute_seconds
    columns = list(values)
    updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c != "scan_number")
    dist_rows = []
    for quantity, d in stats.distributions.items():
        h = stats.histograms.get(quantity)
        dist_rows.append(
            (
                stats.scan,
                quantity,
                d.n,
                d.mean,
                *d.percentiles(),
                h.lo if h else None,
                h.hi if h else None,
                list(h.counts) if h else None,
            )
        )
    with conn.transaction():
        conn.execute(
            f"INSERT INTO scan_stats ({', '.join(columns)}, computed_at) "
            f"VALUES ({', '.join(f'%({c})s' for c in columns)}, now()) "
            f"ON CONFLICT (scan_number) DO UPDATE SET {updates}, computed_at = now()",
            values,
        )
        conn.execute("DELETE FROM scan_distributions WHERE scan_number = %s", (stats.scan,))
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO scan_distributions (scan_number, quantity, n, mean, "
                "p05, p25, p50, p75, p95, hist_lo, hist_hi, hist) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                dist_rows,
            )


def load_scan_stats(conn: psycopg.Connection) -> dict[int, ScanStats]:
    """Every stored scan's statistics, keyed by scan number."""
    dists: dict[int, dict[str, Distribution]] = defaultdict(dict)
    hists: dict[int, dict[str, Histogram]] = defaultdict(dict)
    for row in conn.execute(
        "SELECT scan_number, quantity, n, mean, p05, p25, p50, p75, p95, hist_lo, hist_hi, hist "
        "FROM scan_distributions ORDER BY scan_number, quantity"
    ):
        scan, quantity = int(row[0]), str(row[1])
        dists[scan][quantity] = Distribution(int(row[2]), *row[3:9])
        if row[11] is not None:
            hists[scan][quantity] = Histogram(float(row[9]), float(row[10]), tuple(row[11]))
    out: dict[int, ScanStats] = {}
    for row in conn.execute(
        f"SELECT scan_number, {', '.join(_COUNT_COLUMNS)}, compute_seconds "
        "FROM scan_stats ORDER BY scan_number"
    ):
        scan = int(row[0])
        out[scan] = ScanStats(
            scan,
            *(int(v) for v in row[1:8]),
            distributions=dists.get(scan, {}),
            histograms=hists.get(scan, {}),
            compute_seconds=row[8],
        )
    conn.commit()
    return out
