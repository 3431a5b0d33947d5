"""A small synthetic experiment for the results tests, and its rows read back raw.

The rows are tracker-shaped (mpitrack/stats/synthetic.py); the checkpoints
say regions 0 and 1 committed every scan and region 2 one fewer (a run still
going). `raw_rows` reads the measurements table as stored, JSONB decoded, so
that tests compute their expected answers from the rows, not from the view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from mpitrack import store
from mpitrack.stats.synthetic import SyntheticRun, fill

RUN = SyntheticRun(regions=3, tracks=16, scans=12, broadening=0.4)
CHECKPOINTS = {0: 11, 1: 11, 2: 10}


@dataclass(frozen=True)
class Row:
    region: int
    track: int
    scan: int
    detected: bool
    overlapping: bool
    f: dict[str, Any]

    @property
    def clean(self) -> bool:
        return self.detected and not self.overlapping


def fill_experiment(url: str, experiment: str) -> None:
    with store.connect(url, experiment, retries=0) as conn:
        fill(conn, RUN)
        with conn.transaction():
            for region, scan in CHECKPOINTS.items():
                conn.execute(
                    "INSERT INTO tracker_checkpoints (region_id, scan_number, format_version, "
                    "state) VALUES (%s, %s, 1, %s)",
                    (region, scan, b"synthetic"),
                )


def raw_rows(conn: psycopg.Connection) -> list[Row]:
    rows = conn.execute(
        "SELECT region_id, track_id, scan_number, detected, overlapping, features FROM measurements"
    ).fetchall()
    conn.commit()
    return [Row(*r) for r in rows]
