"""`mpitrack evaluate` reading tracker output from a real database: the same scores as from
the export file holding the same rows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mpitrack import store
from mpitrack.evaluate import read_database, read_export
from mpitrack.sim.truth import read_truth
from mpitrack.track.result import TrackRow

pytestmark = pytest.mark.integration
MPITRACK = str(Path(sys.executable).parent / "mpitrack")


@pytest.fixture
def run_name() -> str:
    """The simulated experiment's run name: evaluate reads that experiment."""
    return "sim"


def test_database_and_export_give_the_same_scores(
    database_url: str, run_name: str, tmp_path: Path
) -> None:
    out = tmp_path / "exp"
    subprocess.run(
        [
            MPITRACK,
            "-q",
            "simulate",
            "--out",
            str(out),
            "--scenario",
            "crossing,isolated",
            "--regions",
            "2",
            "--scans",
            "4",
        ],
        check=True,
        timeout=120,
    )
    truth = read_truth(out / "truth.json")
    # Tracker output = the ground truth itself, written through the real commit path.
    export = tmp_path / "rows.jsonl"
    with store.connect(database_url, run_name, retries=0) as conn, export.open("w") as fh:
        store.ensure_regions(conn, [(r.id, "") for r in truth.regions])
        writer = store.JobWriter(conn)
        for region in truth.regions:
            for scan in range(truth.first_scan, truth.last_scan + 1):
                records = [
                    r
                    for r in truth.records
                    if r.region_id == region.id and r.scan == scan and r.visible
                ]
                rows = [
                    TrackRow(
                        r.track_id + 1,
                        scan,
                        True,
                        r.overlapping,
                        {"position": dict(zip(("omega", "eta", "tth"), r.position, strict=True))},
                    )
                    for r in records
                ]
                writer.commit([store.JobResult(region.id, scan, scan, rows, b"", 1)])
                for row in rows:
                    fh.write(
                        json.dumps(
                            {
                                "region_id": region.id,
                                "track_id": row.track_id,
                                "scan_number": scan,
                                "detected": True,
                                "overlapping": row.overlapping,
                                "features": row.features,
                            }
                        )
                        + "\n"
                    )
        from_db = read_database(conn, ("eta", "tth"))

    def key(d: object) -> tuple:
        return (d.region_id, d.scan, d.object_id)  # type: ignore[attr-defined]

    assert sorted(from_db, key=key) == sorted(read_export(export, ("eta", "tth")), key=key)
    assert len(from_db) == sum(r.visible for r in truth.records)
    result = subprocess.run(
        [
            MPITRACK,
            "-q",
            "evaluate",
            "--config",
            str(out / "experiment.yaml"),
            "--database-url",
            database_url,
            "--json",
            str(tmp_path / "scores.json"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    overall = json.loads((tmp_path / "scores.json").read_text())["overall"]
    assert overall["HOTA"] == pytest.approx(1.0) and overall["IDF1"] == pytest.approx(1.0)
