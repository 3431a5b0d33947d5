"""Spot strips from a real tracker's rows in a real database and real frames.

Two simulated regions in which two spots overlap for a few scans and
separate again (crossing, merge_then_split), tracked scan by scan by a
worker's job runner while the statistics role keeps the live report.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpitrack import store
from mpitrack.roles.stats import ScanStatistics
from mpitrack.stats.sheets import FrameSource
from mpitrack.stats.spotrows import open_from
from mpitrack.stats.strips import MARK, OUTLINE
from mpitrack.storage.postgres import PostgresStatsStore

pytestmark = pytest.mark.integration
MPITRACK = str(Path(sys.executable).parent / "mpitrack")
SCANS = 10


def _cells(page: Path) -> dict[tuple[int, int], set[str]]:
    found = re.findall(r'<td class="([^"]*)"[^>]* title="track (\d+), scan (\d+)', page.read_text())
    return {(int(t), int(s)): set(c.split()) for c, t, s in found}


def test_the_statistics_role_shows_both_spots_scan_by_scan(
    tracked_experiment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = tracked_experiment(scans=SCANS)
    n_scan = experiment.config.tracking.n_scan
    drawn: list[tuple[int, int]] = []
    original = FrameSource.sheet
    monkeypatch.setattr(
        FrameSource,
        "sheet",
        lambda self, region, scan, scale: (
            drawn.append((region, scan)) or original(self, region, scan, scale)
        ),
    )
    out = tmp_path / "report"
    spots = out / "spots"
    now = [0.0]
    with store.connect(experiment.database_url, experiment.config.run, retries=0) as conn:
        role = ScanStatistics(
            PostgresStatsStore(conn), experiment.config, out, clock=lambda: now[0]
        )
        for scan in range(SCANS):
            experiment.track(scan)
            drawn.clear()
            assert role(scan) is not None
            now[0] += 1000.0  # past the refresh interval: every scan redraws
            assert sorted(drawn) == [(0, scan), (1, scan)]  # one new volume per region
            for region in (0, 1):
                cells = _cells(spots / f"region_{region}.html")
                assert {s for (_, s), c in cells.items() if "open" in c} == set(
                    range(max(open_from(scan, n_scan), 0), scan + 1)
                )
        role.finish()

    index = (out / "index.html").read_text()
    assert 'id="spots"' in index and "FINAL" in index
    for region, scenario in ((0, "crossing"), (1, "merge_then_split")):
        page = spots / f"region_{region}.html"
        text = page.read_text()
        assert f"scenario={scenario}" in text
        cells = _cells(page)
        assert not any("open" in c for c in cells.values())
        # Both spots, each followed by a track with an image in every scan.
        tracks = {t for t, _ in cells}
        complete = [t for t in tracks if all((t, s) in cells for s in range(SCANS))]
        assert len(complete) >= 2, sorted(cells)
        for track in complete[:2]:
            assert text.count(f"<b>#{track}</b>") == SCANS
        assert len(list((spots / "sheets" / str(region)).glob("*.png"))) == SCANS
        # The two spots overlap at some point: the page marks it, the gallery lists the region.
        assert any("ovl" in c for c in cells.values())
        look = index[index.index('id="look-overlaps"') :]
        look = look[: look.index("</div></div>")]
        assert f'href="spots/region_{region}.html"' in look


def test_show_writes_the_strip_as_a_png(tracked_experiment, tmp_path: Path) -> None:
    experiment = tracked_experiment(scans=SCANS)
    for scan in range(SCANS):
        experiment.track(scan)
    config = experiment.config.source
    out = tmp_path / "strip.png"
    common = ["--config", config, "--database-url", experiment.database_url]
    done = subprocess.run(
        [MPITRACK, "-q", "show", *common, "--region", "0", "--scans", "5:7", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"x 3 scans -> {out}" in done.stdout
    image_module = pytest.importorskip("PIL.Image")
    with image_module.open(io.BytesIO(out.read_bytes())) as image:
        pixels = np.asarray(image)
    colours = set(np.unique(pixels).tolist())
    assert {OUTLINE, MARK} <= colours  # detection outlines and the tracks' centres
    tracks = int(re.search(r"(\d+) tracks", done.stdout).group(1))
    assert tracks >= 2 and pixels.shape[0] > tracks * 2 * 21 * 3

    wrong = subprocess.run(
        [MPITRACK, "-q", "show", *common, "--region", "9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wrong.returncode == 2 and "region 9 is not in the config" in wrong.stderr
    empty = subprocess.run(
        [MPITRACK, "-q", "show", *common, "--region", "1", "--scans", "70:90"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert empty.returncode == 2 and "region 1 has no tracks in scans 70:90" in empty.stderr
