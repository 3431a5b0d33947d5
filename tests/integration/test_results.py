"""The results view, the Python API and `mpitrack export` on a real database.

Expected values come from the raw rows (the measurements table's JSONB), not
from the view the code under test reads.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas
import psycopg
import pyarrow.parquet as pq
import pytest
from results_data import CHECKPOINTS, Row, fill_experiment, raw_rows

import mpitrack.results
from mpitrack import store
from mpitrack.cli import main
from mpitrack.errors import UsageError
from mpitrack.results.read import parse_regions, parse_scans

pytestmark = pytest.mark.integration

EXPERIMENT = "test"


@pytest.fixture
def rows(database_url: str) -> list[Row]:
    fill_experiment(database_url, EXPERIMENT)
    with store.connect(database_url, EXPERIMENT, retries=0) as conn:
        return raw_rows(conn)


def value(row: Row, column: str) -> float:
    """A view column's value computed from the raw JSONB (NaN where absent)."""
    key, _, axis = column.rpartition("_")
    if column in row.f:
        return float(row.f[column])
    if key in row.f and isinstance(row.f[key], dict):
        return float(row.f[key][axis])
    return math.nan


def view_columns(conn: psycopg.Connection) -> list[str]:
    got = conn.execute(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'measurement_values' "
        "ORDER BY ordinal_position"
    ).fetchall()
    conn.commit()
    return [r[0] for r in got]


def test_each_experiment_has_its_view_named_after_its_axes(empty_database_url: str):
    with store.connect(empty_database_url, "one", retries=0) as conn:
        assert store.apply_schema(conn, ("eta", "tth")) >= 4
        assert "fwhm_eta" in view_columns(conn)
    with store.connect(empty_database_url, "two", retries=0) as conn:
        store.apply_schema(conn, ("chi", "two_theta"))
        columns = view_columns(conn)
        assert {"fwhm_chi", "position_two_theta"} <= set(columns)
        assert "fwhm_eta" not in columns
        # Re-applying without axes keeps the recorded ones; new axes re-create the view.
        store.apply_schema(conn)
        assert view_columns(conn) == columns
        store.apply_schema(conn, ("eta", "tth"))
        assert "fwhm_eta" in view_columns(conn) and "fwhm_chi" not in view_columns(conn)
    with psycopg.connect(empty_database_url) as admin:
        found = admin.execute(
            "SELECT table_schema FROM information_schema.views "
            "WHERE table_name = 'measurement_values' ORDER BY 1"
        ).fetchall()
    assert [r[0] for r in found] == ["one", "two"]


def test_a_migrated_experiment_gets_the_view_of_a_fresh_one(
    empty_database_url: str, rows: list[Row], database_url: str
):
    with store.connect(empty_database_url, EXPERIMENT, retries=0) as conn:
        fresh = view_columns(conn)
        # Back to schema version 3: no result_axes, no view; then migrate.
        with conn.transaction():
            conn.execute("DROP VIEW measurement_values")
            conn.execute("DROP TABLE result_axes")
            conn.execute("DELETE FROM schema_version WHERE version >= 4")
        store.apply_schema(conn)
        assert view_columns(conn) == fresh
        # The axes were inferred from the stored rows (omega, then sorted names).
        assert mpitrack.results.read.axes_of(conn) == ("omega", "eta", "tth")


def test_the_view_equals_the_jsonb(database_url: str, rows: list[Row]):
    with mpitrack.results.open(database_url, experiment=EXPERIMENT) as res:
        got = res.measurements(output="numpy")
    assert len(got) == len(rows)
    by_key = {(r.region, r.scan, r.track): r for r in rows}
    assert [tuple(k) for k in got[["region_id", "scan_number", "track_id"]].tolist()] == sorted(
        by_key
    )
    for column in (
        "position_eta",
        "fwhm_tth",
        "intensity",
        "peak",
        "position_error_omega",
        "n_voxels",
        "peak_snr",
    ):
        want = np.array([value(by_key[k], column) for k in sorted(by_key)])
        np.testing.assert_allclose(got[column], want, rtol=1e-12, equal_nan=True)
    predicted = np.array([bool(by_key[k].f.get("predicted")) for k in sorted(by_key)])
    assert predicted.any() and np.array_equal(got["predicted"], predicted)
    assert np.array_equal(got["detected"], ~predicted)


def test_api_filters_and_outputs(database_url: str, rows: list[Row]):
    with mpitrack.results.open(database_url, experiment=EXPERIMENT) as res:
        assert res.axes == ("omega", "eta", "tth")
        frame = res.measurements(
            regions=[0, 2],
            scans=(3, 5),
            columns=["region_id", "track_id", "scan_number", "fwhm_eta"],
        )
        assert isinstance(frame, pandas.DataFrame)
        want = sorted(
            (r.region, r.scan, r.track) for r in rows if r.region in (0, 2) and 3 <= r.scan <= 5
        )
        assert list(zip(frame.region_id, frame.scan_number, frame.track_id, strict=True)) == want
        assert list(frame.columns) == ["region_id", "track_id", "scan_number", "fwhm_eta"]
        open_end = res.measurements(scans=(10, None), detected_only=True, output="numpy")
        assert len(open_end) == sum(r.scan >= 10 and r.detected for r in rows) > 0
        assert len(res.measurements(regions=[99], output="numpy")) == 0
        trajectory = res.trajectory(1, 5)
        assert list(trajectory.scan_number) == sorted(
            r.scan for r in rows if (r.region, r.track) == (1, 5)
        )
        tracks = res.tracks(regions=[1], output="numpy")
        n_detected = sum(r.detected for r in rows if (r.region, r.track) == (1, 5))
        (five,) = tracks[tracks["track_id"] == 5]
        assert five["n_detected"] == n_detected and set(tracks["region_id"]) == {1}
        assert res.final_scans(n_scan=3) == {r: s - 2 for r, s in CHECKPOINTS.items()}
        with pytest.raises(UsageError, match="n_scan"):
            res.final_scans()
        with pytest.raises(UsageError, match="unknown columns"):
            res.measurements(columns=["fwhm_nope"])


def test_open_names_what_is_missing(database_url: str, empty_database_url: str):
    with pytest.raises(UsageError, match="experiment"):
        mpitrack.results.open(database_url)
    with store.connect(empty_database_url, "old", retries=0) as conn:
        conn.execute("CREATE SCHEMA old")
        conn.commit()
    with pytest.raises(UsageError, match="db init"):
        mpitrack.results.open(empty_database_url, experiment="old")


def export_command(database_url: str, fmt: str, out: Path) -> list[str]:
    """`mpitrack export` of the test experiment in format ``fmt`` to ``out``."""
    return [
        "export", "--database-url", database_url, "--run", EXPERIMENT,
        "--format", fmt, "--out", str(out),
    ]  # fmt: skip


@pytest.mark.parametrize("fmt", ["csv", "parquet", "hdf5"])
def test_export_writes_the_selected_rows_with_units(
    database_url: str,
    rows: list[Row],
    tmp_path: Path,
    fmt: str,
    capsys: pytest.CaptureFixture[str],
):
    out = tmp_path / f"x.{fmt}"
    code = main([*export_command(database_url, fmt, out), "--regions", "0,2", "--scans", "4:7"])
    assert code == 0
    assert f"wrote {sum(r.region in (0, 2) and 4 <= r.scan <= 7 for r in rows)} rows" in (
        capsys.readouterr().out
    )
    chosen = sorted(
        (r for r in rows if r.region in (0, 2) and 4 <= r.scan <= 7),
        key=lambda r: (r.region, r.scan, r.track),
    )
    if fmt == "csv":
        with out.open() as fh:
            table = list(csv.DictReader(fh))
        got = {
            "region_id": [int(t["region_id"]) for t in table],
            "track_id": [int(t["track_id"]) for t in table],
            "detected": [t["detected"] == "true" for t in table],
            "fwhm_eta": [float(t["fwhm_eta"] or "nan") for t in table],
        }
        assert {t["detected"] for t in table} == {"true", "false"}
    elif fmt == "parquet":
        table = pq.read_table(out)
        got = {
            name: table.column(name).to_numpy()
            for name in ("region_id", "track_id", "detected", "fwhm_eta")
        }
        assert table.schema.field("fwhm_eta").metadata[b"unit"] == b"voxels"
        meta = json.loads(table.schema.metadata[b"mpitrack"])
        assert meta["experiment"] == EXPERIMENT and meta["regions"] == [0, 2]
    else:
        with h5py.File(out) as h5:
            assert sorted(h5) == ["region_0000", "region_0002"]
            assert h5.attrs["experiment"] == EXPERIMENT and h5.attrs["first_scan"] == 4
            assert h5["region_0002/fwhm_eta"].attrs["unit"] == "voxels"
            assert h5["region_0002/intensity"].attrs["unit"] == "counts"
            got = {name: [] for name in ("region_id", "track_id", "detected", "fwhm_eta")}
            for name in sorted(h5):
                group = h5[name]
                n = group["track_id"].shape[0]
                got["region_id"] += [int(group.attrs["region_id"])] * n
                for column in ("track_id", "detected", "fwhm_eta"):
                    got[column] += list(group[column][:])
    assert list(got["region_id"]) == [r.region for r in chosen]
    assert list(got["track_id"]) == [r.track for r in chosen]
    assert list(got["detected"]) == [r.detected for r in chosen]
    np.testing.assert_allclose(
        np.asarray(got["fwhm_eta"], dtype=float),
        [value(r, "fwhm_eta") for r in chosen],
        rtol=1e-12,
        equal_nan=True,
    )


def test_export_refuses_bad_selections(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    base = export_command(database_url, "csv", tmp_path / "x.csv")
    assert main([*base, "--scans", "7:4"]) == 2
    assert "before the first" in capsys.readouterr().err
    assert main([*base, "--regions", "a-b"]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_scan_and_region_syntax():
    assert parse_scans("3:9") == (3, 9)
    assert parse_scans("3:") == (3, None)
    assert parse_scans(":9") == (None, 9)
    assert parse_scans("4") == (4, 4)
    assert parse_regions("7-9,3,5,3") == (3, 5, 7, 8, 9)
    for bad in ("", ":", "a:b", "9:3"):
        with pytest.raises(ValueError):
            parse_scans(bad)


def test_open_from_a_config_uses_its_run_database_and_window(
    database_url: str, rows: list[Row], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    config = tmp_path / "experiment.yaml"
    config.write_text(
        f"run: {EXPERIMENT}\nworkdir: {tmp_path / 'work'}\n"
        "frames: {directory: frames, axes: [eta, tth]}\n"
        "tracking: {n_scan: 4}\n"
        "regions:\n- {id: 0, frames: [0, 5]}\n"
    )
    monkeypatch.setenv("MPITRACK_DATABASE_URL", database_url)
    with mpitrack.results.open(config) as res:
        assert res.experiment == EXPERIMENT
        assert res.final_scans() == {r: s - 3 for r, s in CHECKPOINTS.items()}
        assert len(res.measurements(regions=[0], output="numpy")) == sum(
            r.region == 0 for r in rows
        )


def test_the_documented_columns_are_the_tables_columns(empty_database_url: str):
    from mpitrack.results.keys import MEASUREMENT_COLUMNS, TRACK_COLUMNS

    with store.connect(empty_database_url, "columns", retries=0) as conn:
        store.apply_schema(conn, ("eta", "tth"))
        for table, documented in (("measurements", MEASUREMENT_COLUMNS), ("tracks", TRACK_COLUMNS)):
            found = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name = %s "
                "ORDER BY ordinal_position",
                (table,),
            ).fetchall()
            assert [(c.name, c.sql_type) for c in documented] == [tuple(r) for r in found], table
