"""scan_stats as CSV: one row per scan, one column per count and per distribution statistic.

For spreadsheets and pandas: columns ``scan, regions, live_tracks, detected,
missed, overlapping, overlap_fraction, births, deaths`` and then, for each
quantity, ``<quantity>_n, _mean, _p05, _p25, _p50, _p75, _p95, _iqr``.
Floats are written with ``repr`` (shortest exact form) so reading the file
back gives the same numbers; an empty distribution's cells are empty. The
width histograms are not in the CSV (they are in the database and the report).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from mpitrack.stats.summary import PERCENTILE_NAMES, Distribution, ScanStats

COUNT_COLUMNS = ("regions", "live_tracks", "detected", "missed", "overlapping")
TAIL_COLUMNS = ("births", "deaths")
_STATS = ("n", "mean", *PERCENTILE_NAMES, "iqr")


def _cell(value: float | int | None) -> str:
    if value is None:
        return ""
    return repr(int(value)) if isinstance(value, int) else repr(float(value))


def header(quantities: Sequence[str]) -> list[str]:
    return [
        "scan",
        *COUNT_COLUMNS,
        "overlap_fraction",
        *TAIL_COLUMNS,
        *(f"{q}_{s}" for q in quantities for s in _STATS),
    ]


def to_csv(stats: Iterable[ScanStats], quantities: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header(quantities))
    for s in sorted(stats, key=lambda s: s.scan):
        row = [_cell(s.scan), *(_cell(getattr(s, c)) for c in COUNT_COLUMNS)]
        row.append(_cell(s.overlap_fraction))
        row.extend(_cell(getattr(s, c)) for c in TAIL_COLUMNS)
        for q in quantities:
            d = s.distribution(q)
            row.extend(_cell(v) for v in (d.n, d.mean, *d.percentiles(), d.iqr))
        writer.writerow(row)
    return buffer.getvalue()


def write_csv(path: Path, stats: Iterable[ScanStats], quantities: Sequence[str]) -> None:
    """Write atomically (temporary file, then rename): a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(to_csv(stats, quantities), encoding="utf-8")
    os.replace(tmp, path)


def _float(text: str) -> float | None:
    return None if text == "" else float(text)


def read_csv(path: Path) -> list[ScanStats]:
    """Parse a file written by `write_csv` (derived columns are checked, not stored)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = reader.fieldnames or []
        quantities = [f[: -len("_n")] for f in fields if f.endswith("_n")]
        out = []
        for line, row in enumerate(reader, start=2):
            dists = {}
            for q in quantities:
                d = Distribution(
                    int(row[f"{q}_n"]),
                    _float(row[f"{q}_mean"]),
                    *(_float(row[f"{q}_{p}"]) for p in PERCENTILE_NAMES),
                )
                dists[q] = d
            s = ScanStats(
                int(row["scan"]),
                *(int(row[c]) for c in COUNT_COLUMNS),
                *(int(row[c]) for c in TAIL_COLUMNS),
                distributions=dists,
            )
            if _float(row["overlap_fraction"]) != s.overlap_fraction:
                raise ValueError(f"{path}:{line}: overlap_fraction disagrees with the counts")
            out.append(s)
    return out
