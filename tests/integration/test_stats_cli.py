"""`mpitrack report` end to end against a real database: files, CSV round trip, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from mpitrack import store
from mpitrack.cli import main
from mpitrack.stats import csvfile, storage, synthetic

pytestmark = pytest.mark.integration

CONFIG = """\
run: cli-test
workdir: {workdir}
frames: {{directory: frames, axes: [eta, tth]}}
scans: {{first: 0, last: 5}}
regions:
- {{id: 0, frames: [0, 5], description: first}}
- {{id: 1, frames: [10, 15], description: second}}
- {{id: 2, frames: [20, 25]}}
"""


@pytest.fixture
def run_name() -> str:
    """The config's run: the report reads that experiment."""
    return "cli-test"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "experiment.yaml"
    path.write_text(CONFIG.format(workdir=tmp_path / "work"))
    return path


def test_report_writes_files_and_csv_matches_the_database(
    database_url: str,
    run_name: str,
    config: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    pytest.importorskip("matplotlib")
    with store.connect(database_url, run_name, retries=0) as conn:
        synthetic.fill(conn, synthetic.SyntheticRun(regions=3, tracks=4, scans=6))
    out = tmp_path / "out"
    code = main(["report", "--config", str(config), "--database-url", database_url, "-o", str(out)])
    assert code == 0
    assert "6 scans ->" in capsys.readouterr().out
    for name in ("index.html", "scan_stats.csv", "widths.png", "regions/region_2.png"):
        assert (out / name).is_file(), name
    from_csv = csvfile.read_csv(out / "scan_stats.csv")
    with store.connect(database_url, run_name, retries=0) as conn:
        stored = storage.load_scan_stats(conn)
    assert [s.scan for s in from_csv] == list(range(6))
    assert from_csv == [stored[s.scan].without_extras() for s in from_csv]
    assert "cli-test" in (out / "index.html").read_text()


def test_report_on_an_empty_database_still_writes_a_page(
    database_url: str, config: Path, tmp_path: Path
):
    out = tmp_path / "empty"
    code = main(["report", "--config", str(config), "--database-url", database_url, "-o", str(out)])
    assert code == 0
    assert "No scan has completed yet." in (out / "index.html").read_text()


def test_unwritable_report_directory_is_a_usage_error(
    database_url: str, config: Path, tmp_path: Path
):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(
        ["report", "--config", str(config), "--database-url", database_url, "-o", str(blocker)]
    )
    assert code == 2
