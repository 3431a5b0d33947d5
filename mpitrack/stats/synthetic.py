"""Synthetic tracking results written straight into the database, for benchmarks and tests.

The statistics only read the measurements and tracks tables, so a realistic
table can be made without running the tracker: one INSERT ... SELECT over
generate_series writes any number of rows with feature documents shaped like
the tracker's (every key `mpitrack.track.features.build_spots` writes, about
1 kB of JSONB per detection), which is what makes per-scan reads cost what
they cost in a real run. A million rows take tens of seconds, not hours.

The pattern: ``regions`` regions of ``tracks`` tracks each; most tracks live
through every scan, every 4th starts late (births), every 4th other ends
early (deaths); about 5 % of rows are missed detections and 8 % of
detections overlap. Rows are written in scan order, as a run commits them
(``layout="track"`` scatters each scan's rows instead: a worst case).
Widths grow linearly by ``broadening`` (relative) from the first scan to the
last, so the report has something to show.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class SyntheticRun:
    regions: int
    tracks: int
    scans: int
    broadening: float = 0.3
    seed: float = 0.42
    layout: str = "scan"  # row order on disk: "scan" (as a run commits) or "track" (worst case)

    @property
    def rows_upper_bound(self) -> int:
        return self.regions * self.tracks * self.scans


_SPANS = """
CREATE TEMPORARY TABLE synthetic_spans ON COMMIT DROP AS
SELECT r AS region_id, k AS track_id,
       CASE WHEN k %% 4 = 3 THEN (r * 3 + k) %% greatest(%(scans)s / 2, 1) ELSE 0 END AS a,
       CASE WHEN k %% 4 = 2 THEN %(scans)s / 2 + (r + k) %% greatest(%(scans)s / 2, 1)
            ELSE %(scans)s - 1 END AS b
FROM generate_series(0, %(regions)s - 1) r, generate_series(0, %(tracks)s - 1) k
"""

# One row per (track, scan in its span). random() is seeded, so a given
# SyntheticRun always writes the same table.
_ROWS = """
INSERT INTO measurements (region_id, track_id, scan_number, detected, overlapping, features)
SELECT region_id, track_id, s, det, det AND ov,
  CASE WHEN det THEN jsonb_build_object(
    'position', jsonb_build_object('omega', po, 'eta', pe, 'tth', pt),
    'intensity', inten, 'peak', inten / 40, 'n_voxels', 40 + (inten::int %% 30),
    'bbox', jsonb_build_object('omega', jsonb_build_array(floor(po) - 1, floor(po) + 1),
                               'eta', jsonb_build_array(floor(pe) - 2, floor(pe) + 2),
                               'tth', jsonb_build_array(floor(pt) - 2, floor(pt) + 2)),
    'bbox_size', jsonb_build_object('omega', 3, 'eta', 5, 'tth', 5),
    'bbox_centre', jsonb_build_object('omega', floor(po), 'eta', floor(pe), 'tth', floor(pt)),
    'sigma', jsonb_build_object('omega', fo / 2.3548, 'eta', fe / 2.3548, 'tth', ft / 2.3548),
    'fwhm', jsonb_build_object('omega', fo, 'eta', fe, 'tth', ft),
    'covariance', jsonb_build_array(
        jsonb_build_array((fo / 2.3548) ^ 2, 0.01, 0.02),
        jsonb_build_array(0.01, (fe / 2.3548) ^ 2, 0.03),
        jsonb_build_array(0.02, 0.03, (ft / 2.3548) ^ 2)),
    'principal_variances', jsonb_build_array(
        greatest(fo, fe, ft) ^ 2 / 5.545, least(fo, fe, ft) ^ 2 / 5.545, 0.5),
    'principal_axes', jsonb_build_array(
        jsonb_build_array(0.1, 0.2, 0.97), jsonb_build_array(0.2, 0.95, -0.2),
        jsonb_build_array(0.97, -0.2, 0.1)),
    'touches_boundary', jsonb_build_object('omega', false, 'eta', false, 'tth', false),
    'peak_snr', inten / 400,
    'position_error', jsonb_build_object('omega', 0.02, 'eta', 0.03, 'tth', 0.03),
    'intensity_error', sqrt(inten))
  ELSE jsonb_build_object(
    'position', jsonb_build_object('omega', po, 'eta', pe, 'tth', pt), 'predicted', true)
  END
FROM (
  SELECT sp.region_id, sp.track_id, s,
         random() > 0.05 AS det, random() < 0.08 AS ov,
         5 + random() AS po, 5 + (sp.track_id %% 25) + s * 0.05 AS pe, 5 + random() * 25 AS pt,
         exp(8 + random()) AS inten,
         (2.2 + 0.4 * random()) * (1 + %(broadening)s * s / greatest(%(scans)s - 1, 1)) AS fo,
         (3.2 + 0.6 * random()) * (1 + %(broadening)s * s / greatest(%(scans)s - 1, 1)) AS fe,
         (3.0 + 0.6 * random()) * (1 + 0.5 * %(broadening)s * s / greatest(%(scans)s - 1, 1))
           AS ft
  FROM synthetic_spans sp, generate_series(sp.a, sp.b) s
) g
ORDER BY {order}
"""


# A run commits scan by scan, so a scan's rows sit together on disk; the
# track-major order scatters them over as many pages as rows (worst case).
_ORDER = {"scan": "s, region_id, track_id", "track": "region_id, track_id, s"}


def fill(conn: psycopg.Connection, run: SyntheticRun) -> int:
    """Write the synthetic run into an empty schema; return the number of measurement rows."""
    params = {
        "regions": run.regions,
        "tracks": run.tracks,
        "scans": run.scans,
        "broadening": run.broadening,
    }
    with conn.transaction():
        conn.execute("SELECT setseed(%s)", (run.seed,))
        conn.execute(
            "INSERT INTO regions (region_id, description) "
            "SELECT r, 'synthetic ' || r FROM generate_series(0, %(regions)s - 1) r "
            "ON CONFLICT DO NOTHING",
            params,
        )
        conn.execute(_SPANS, params)
        conn.execute(
            "INSERT INTO tracks (region_id, track_id) SELECT region_id, track_id "
            "FROM synthetic_spans",
        )
        if run.layout not in _ORDER:
            raise ValueError(f"layout must be one of {sorted(_ORDER)}, got {run.layout!r}")
        cur = conn.execute(_ROWS.replace("{order}", _ORDER[run.layout]), params)
        rows = cur.rowcount
        conn.execute(
            """
            UPDATE tracks t SET first_detected_scan = d.first, last_detected_scan = d.last
            FROM (SELECT region_id, track_id, min(scan_number) AS first,
                         max(scan_number) AS last
                  FROM measurements WHERE detected GROUP BY region_id, track_id) d
            WHERE t.region_id = d.region_id AND t.track_id = d.track_id
            """
        )
    conn.execute("ANALYZE measurements")
    conn.execute("ANALYZE tracks")
    conn.commit()
    return rows
