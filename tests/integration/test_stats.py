"""Statistics on a small constructed database with known answers (real PostgreSQL)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import psycopg
import pytest

from mpitrack import store
from mpitrack.roles.stats import ScanStatistics, serve
from mpitrack.stats import csvfile, query, report, storage, synthetic
from mpitrack.stats.summary import quantity_names
from mpitrack.storage.postgres import PostgresStatsStore

pytestmark = pytest.mark.integration

AXES = ("omega", "eta", "tth")

# region, track, first detected scan, last detected scan
TRACKS = [(1, 1, 0, 2), (1, 2, 0, 0), (2, 3, 0, 1), (2, 4, 1, 2)]
# region, track, scan, detected, overlapping, FWHM omega (None: missed row)
ROWS = [
    (1, 1, 0, True, False, 2.0),
    (1, 2, 0, True, False, 3.0),
    (2, 3, 0, True, True, 9.0),
    (1, 1, 1, True, False, 1.0),
    (1, 2, 1, False, False, None),
    (2, 3, 1, True, False, 2.0),
    (2, 4, 1, True, False, 4.0),
    (1, 1, 2, True, False, 5.0),
    (2, 4, 2, True, False, 6.0),
]


def _features(fwhm: float | None, track: int) -> dict:
    position = {"omega": 1.0 + track, "eta": 10.0 + track, "tth": 20.0 - track}
    if fwhm is None:
        return {"position": position, "predicted": True}
    return {
        "position": position,
        "fwhm": {"omega": fwhm, "eta": 2 * fwhm, "tth": 3.0},
        "sigma": {"omega": fwhm / 2.3548, "eta": 2 * fwhm / 2.3548, "tth": 3.0 / 2.3548},
        "intensity": 100.0 * fwhm,
        "principal_variances": [fwhm * fwhm, 1.0, 0.5],
    }


@pytest.fixture
def conn(database_url: str, run_name: str):
    with store.connect(database_url, run_name, retries=0) as c:
        c.execute("INSERT INTO regions (region_id, description) VALUES (1, 'one'), (2, 'two')")
        c.cursor().executemany(
            "INSERT INTO tracks (region_id, track_id, first_detected_scan, last_detected_scan) "
            "VALUES (%s, %s, %s, %s)",
            TRACKS,
        )
        c.cursor().executemany(
            "INSERT INTO measurements (region_id, track_id, scan_number, detected, overlapping, "
            "features) VALUES (%s, %s, %s, %s, %s, %s)",
            [(r, t, s, d, o, json.dumps(_features(f, t))) for r, t, s, d, o, f in ROWS],
        )
        c.commit()
        yield c


def test_schema_has_the_migration(conn: psycopg.Connection):
    assert store.schema_version(conn) >= 2
    cols = {
        r[0]
        for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'scan_stats'"
        )
    }
    assert {"overlap_fraction", "compute_seconds", "births", "deaths"} <= cols


def test_counts_births_deaths_known_answers(conn: psycopg.Connection):
    s0, s1, s2 = (query.compute_scan(conn, s, AXES) for s in range(3))
    assert (s0.regions, s0.live_tracks, s0.detected, s0.missed, s0.overlapping) == (2, 3, 3, 0, 1)
    assert (s0.births, s0.deaths) == (3, 0)
    assert (s1.live_tracks, s1.detected, s1.missed, s1.overlapping) == (4, 3, 1, 0)
    assert (s1.births, s1.deaths) == (1, 0)
    assert (s2.regions, s2.live_tracks, s2.detected, s2.births, s2.deaths) == (2, 2, 2, 0, 2)
    assert s0.overlap_fraction == pytest.approx(1 / 3)


def test_distributions_known_answers(conn: psycopg.Connection):
    s0, s1, s2 = (query.compute_scan(conn, s, AXES) for s in range(3))
    # Scan 0: the overlapping spot (FWHM 9) is left out of the spot distributions.
    w0 = s0.distribution("width_omega")
    assert (w0.n, w0.p50, w0.mean) == (2, 2.5, 2.5)
    # Scan 1: clean FWHM omega 1, 2, 4 (the missed row has none).
    w1 = s1.distribution("width_omega")
    assert (w1.n, w1.p05, w1.p25, w1.p50, w1.p75, w1.p95) == pytest.approx(
        (3, 1.1, 1.5, 2.0, 3.0, 3.8)
    )
    assert s1.distribution("width_eta").p50 == pytest.approx(4.0)
    assert s1.distribution("intensity").p50 == pytest.approx(200.0)
    assert s1.distribution("max_variance").p95 == pytest.approx(4 + 0.9 * (16 - 4))
    # Ages at scan 1: tracks 1, 2, 3 born at 0 (age 2), track 4 at 1 (age 1).
    assert s1.distribution("age").mean == pytest.approx(7 / 4)
    # Scan 2: tracks 2 (detected 0..0) and 3 (0..1) died: lifetimes 1 and 2.
    life = s2.distribution("lifetime")
    assert (life.n, life.p50, life.p25) == (2, 1.5, 1.25)
    assert s2.histograms["width_omega"].counts[20] == 1  # 5.0 voxels, 0.25-voxel bins


def test_percentiles_agree_with_postgresql(conn: psycopg.Connection):
    got = query.compute_scan(conn, 1, AXES).distribution("width_omega")
    row = conn.execute(
        "SELECT percentile_cont(ARRAY[0.05, 0.25, 0.5, 0.75, 0.95]) WITHIN GROUP "
        "(ORDER BY (features #>> '{fwhm,omega}')::float8) FROM measurements "
        "WHERE scan_number = 1 AND detected AND NOT overlapping"
    ).fetchone()
    conn.commit()
    assert list(got.percentiles()) == pytest.approx(row[0])


def test_store_and_load_round_trip(conn: psycopg.Connection):
    computed = report.compute_scans(conn, range(3), AXES)
    computed[1] = query.compute_scan(conn, 1, AXES)  # recomputing replaces, never duplicates
    storage.save_scan_stats(conn, computed[1])
    loaded = storage.load_scan_stats(conn)
    assert sorted(loaded) == [0, 1, 2]
    for scan, stats in computed.items():
        assert loaded[scan].without_extras() == stats.without_extras()
        assert loaded[scan].histograms == stats.histograms
    n = conn.execute("SELECT count(*) FROM scan_distributions WHERE scan_number = 1").fetchone()
    assert n[0] == len(quantity_names(AXES))
    conn.commit()


def test_lifetimes_and_trajectories(conn: psycopg.Connection):
    spans = query.track_spans(conn)
    assert sorted(zip(spans.lifetimes.tolist(), spans.alive.tolist(), strict=True)) == [
        (1, False),
        (2, False),
        (2, True),
        (3, True),
    ]
    tracks = query.trajectories(conn, 1, AXES)
    assert [t.track for t in tracks] == [1, 2]
    assert tracks[0].scans.tolist() == [0, 1, 2]
    assert tracks[1].detected.tolist() == [True, False]
    assert tracks[0].positions[0].tolist() == [2.0, 11.0, 19.0]
    overlaps = query.trajectories(conn, 2, AXES)[0].overlapping.tolist()
    assert overlaps == [True, False]
    # Region 2 had the overlap and region 1 the miss in scans 0..2; both listed, busiest first.
    assert query.busy_regions(conn, 2, limit=1) in ([1], [2])
    assert sorted(query.busy_regions(conn, 2, limit=5)) == [1, 2]


class ListLink:
    """The dispatcher's side of the stats link, played by a list (in-process, like LocalLink)."""

    def __init__(self, scans: list[int]) -> None:
        self.scans = list(scans)

    def next_scan(self) -> int | None:
        return self.scans.pop(0) if self.scans else None


def test_role_writes_live_then_final_report(conn: psycopg.Connection, tmp_path: Path):
    out = tmp_path / "report"
    now = [0.0]
    stats = ScanStatistics(
        PostgresStatsStore(conn), report_dir=out, refresh_interval=100.0, clock=lambda: now[0]
    )
    assert stats(0) is not None
    page = (out / "index.html").read_text()
    assert 'http-equiv="refresh"' in page and "latest (scan 0)" in page
    assert stats(1) is not None  # within the refresh interval: no redraw
    assert stats.refreshes == 1
    assert "latest (scan 0)" in (out / "index.html").read_text()
    now[0] = 1000.0
    assert serve(stats, ListLink([2, 2])) == 1  # a scan announced twice counts once
    page = (out / "index.html").read_text()
    assert "http-equiv" not in page and "FINAL" in page and "latest (scan 2)" in page
    for name in (
        "widths.png",
        "width_heatmap.png",
        "counts.png",
        "intensity.png",
        "lifetimes.png",
        "regions/region_1.png",
        "regions/region_2.png",
    ):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    csv_rows = csvfile.read_csv(out / "scan_stats.csv")
    assert [r.scan for r in csv_rows] == [0, 1, 2]
    assert csv_rows[2].deaths == 2
    # Axes were inferred from the stored features (no config given).
    assert stats.options is not None and stats.options.axes == AXES


def test_role_revises_the_open_window(conn: psycopg.Connection):
    stats = ScanStatistics(PostgresStatsStore(conn), report=False, revise=2)
    stats(0)
    stats(1)
    # A later commit revises scan 1: the overlapping flag of track 3 is set.
    conn.execute(
        "UPDATE measurements SET overlapping = true WHERE scan_number = 1 AND track_id = 3"
    )
    conn.commit()
    stats(2)
    assert stats.stats is not None and stats.stats[1].overlapping == 1
    assert storage.load_scan_stats(conn)[1].overlapping == 1


def test_role_never_raises(conn: psycopg.Connection, caplog: pytest.LogCaptureFixture):
    stats = ScanStatistics(PostgresStatsStore(conn), report=False)
    conn.execute("DROP TABLE scan_distributions")
    conn.commit()
    with caplog.at_level(logging.ERROR):
        assert stats(1) is None
    assert "statistics for scan 1 failed" in caplog.text
    # The connection is usable afterwards.
    assert conn.execute("SELECT 1").fetchone() == (1,)


def test_scans_read_in_ranges_give_the_per_scan_statistics(database_url: str, run_name: str):
    """The offline report's ranged read (compute_scans) against one compute_scan per
    scan, on a synthetic table with births, deaths, misses and overlaps; ranges of 4
    scans, so that a death or birth across a range's edge is counted too."""
    with store.connect(database_url, run_name, retries=0) as conn:
        synthetic.fill(conn, synthetic.SyntheticRun(regions=5, tracks=8, scans=11))
        ranged = report.compute_scans(conn, range(11), AXES, save=False, scans_per_read=4)
        assert sorted(ranged) == list(range(11))
        assert sum(s.births for s in ranged.values() if s.scan > 0) > 0
        assert sum(s.deaths for s in ranged.values()) > 0
        for scan in range(11):
            alone = query.compute_scan(conn, scan, AXES)
            got = ranged[scan]
            for name in ("regions", "live_tracks", "detected", "missed", "overlapping"):
                assert getattr(got, name) == getattr(alone, name), (scan, name)
            assert (got.births, got.deaths) == (alone.births, alone.deaths), scan
            assert got.distributions.keys() == alone.distributions.keys()
            for quantity, want in alone.distributions.items():
                have = got.distributions[quantity]
                assert have.n == want.n, (scan, quantity)
                for field in ("mean", "p05", "p25", "p50", "p75", "p95"):
                    assert getattr(have, field) == pytest.approx(getattr(want, field)), (
                        scan,
                        quantity,
                        field,
                    )
            assert got.histograms == alone.histograms, scan
