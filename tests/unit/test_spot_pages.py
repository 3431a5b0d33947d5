"""The spot pages: what an update reads and draws, revision and open marks, budget, sizes.

The store is played by an object with the `ReportReads` methods the pages use
(storage/base.py allows any); the frames are real files, detected for real.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from mpitrack.config import load_config
from mpitrack.frames import FrameMasks, FramePattern
from mpitrack.stats import html, spot_html
from mpitrack.stats.lookfirst import RegionMetrics, looks
from mpitrack.stats.sheets import FrameSource
from mpitrack.stats.spotrows import SpotRow
from mpitrack.stats.spots import SpotOptions, SpotReport
from mpitrack.stats.strips import NO_DATA, OUTLINE, SheetLayout

AXES = ("omega", "eta", "tth")
SHAPE = (5, 20, 20)
PATTERN = "region_{region}_frame_{frame}_scan_{scan}.npy"


class Rows:
    """The reads of the spot pages over rows held in a dict; counts what is read."""

    def __init__(self) -> None:
        self.rows: dict[tuple[int, int, int], SpotRow] = {}  # (region, scan, track)
        self.reads: list[tuple[int, int | None]] = []

    def put(self, region: int, row: SpotRow) -> None:
        self.rows[(region, row.scan, row.track)] = row

    def regions_with_rows(self, first_scan: int | None, last_scan: int) -> list[int]:
        low = -(10**9) if first_scan is None else first_scan
        return sorted({r for r, s, _ in self.rows if low <= s <= last_scan})

    def spot_rows(self, region: int, axes, from_scan: int | None = None) -> list[SpotRow]:
        self.reads.append((region, from_scan))
        low = -(10**9) if from_scan is None else from_scan
        return [row for (r, s, _), row in sorted(self.rows.items()) if r == region and s >= low]


def _row(track: int, scan: int, pos=(2.0, 6.0, 6.0), overlapping=False) -> SpotRow:
    bbox = tuple((int(p) - 2, int(p) + 2) for p in pos)
    return SpotRow(track, scan, True, overlapping, pos, bbox, (2.0, 2.5, 2.5))


def _write_frames(directory: Path, region: int, scan: int, centres) -> None:
    rng = np.random.default_rng(region * 100 + scan)
    grid = np.indices(SHAPE).astype(float)
    volume = 100.0 + rng.normal(0, 2.0, SHAPE)
    for centre in centres:
        r2 = sum(((g - c) / 1.2) ** 2 for g, c in zip(grid, centre, strict=True))
        volume += 800.0 * np.exp(-r2 / 2)
    pattern = FramePattern(PATTERN)
    for i, frame in enumerate(_window(region)):
        np.save(directory / pattern.format(region, frame, scan), volume[i].astype(np.float32))


def _window(region: int) -> tuple[int, ...]:
    return tuple(range(10 * region, 10 * region + SHAPE[0]))


@pytest.fixture
def frames(tmp_path: Path) -> Path:
    directory = tmp_path / "frames"
    directory.mkdir()
    for region in range(3):
        for scan in range(10):
            _write_frames(directory, region, scan, [(2.0, 6.0, 6.0), (2.0, 14.0, 13.0)])
    return directory


def _report(tmp_path: Path, frames: Path, **options) -> SpotReport:
    source = FrameSource(
        frames, FramePattern(PATTERN), {r: _window(r) for r in range(3)}, SHAPE[1:]
    )
    return SpotReport(
        tmp_path / "report",
        SpotOptions(source, **{"n_scan": 3, **options}),
        "test",
        AXES,
        {0: "crossing"},
    )


def test_sheet_applies_the_runs_frame_mask_as_the_workers_do(tmp_path: Path, frames: Path) -> None:
    region, scan, gap = 0, 0, 6  # detector column 6 runs through the spot at (2, 6, 6)
    pattern = FramePattern(PATTERN)
    for frame in _window(region):
        path = frames / pattern.format(region, frame, scan)
        data = np.load(path)
        data[:, gap] = -1.0  # the detector's gap marker
        np.save(path, data)
    config_file = tmp_path / "run.yaml"
    config_file.write_text(
        f"""
run: masked
scans: {{first: 0, last: 9}}
regions:
  - {{id: 0, frames: [0, {SHAPE[0] - 1}]}}
frames:
  directory: {frames}
  pattern: {PATTERN}
  frames_per_scan: 1440
  shape: [{SHAPE[1]}, {SHAPE[2]}]
  mask: {{values: [-1]}}
"""
    )
    source = FrameSource.from_config(load_config(config_file, env={}))
    assert source.windows[region] == _window(region)
    projection = source.sheet(region, scan, scale=1).pixels[:, : SHAPE[2]]
    # no data, but for the outline of the spot detection found across the gap
    assert set(np.unique(projection[:, gap])) == {NO_DATA, OUTLINE}
    unmasked = replace(source, masks=FrameMasks())
    assert not (unmasked.sheet(region, scan, scale=1).pixels == NO_DATA).any()


def _cells(page: Path) -> dict[tuple[int, int], set[str]]:
    """(track, scan) -> the classes of its cell."""
    found = re.findall(r'<td class="([^"]*)"[^>]* title="track (\d+), scan (\d+)', page.read_text())
    return {(int(t), int(s)): set(c.split()) for c, t, s in found}


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Every (region, scan) whose sheet is drawn."""
    calls: list[tuple[int, int]] = []
    original = FrameSource.sheet

    def counting(self, region, scan, scale):
        calls.append((region, scan))
        return original(self, region, scan, scale)

    monkeypatch.setattr(FrameSource, "sheet", counting)
    return calls


def test_pages_follow_the_commits_and_mark_revisions_and_the_open_window(
    tmp_path: Path, frames: Path, drawn: list
) -> None:
    rows = Rows()
    for region in range(3):
        rows.put(region, _row(1, 0))
    rows.put(0, _row(2, 0, (2.0, 14.0, 13.0)))
    report = _report(tmp_path, frames)
    gallery, _ = report.update(rows, 0, 0, final=False)
    spots = tmp_path / "report" / "spots"
    assert sorted(rows.reads) == [(0, None), (1, None), (2, None)]
    assert sorted(drawn) == [(0, 0), (1, 0), (2, 0)]
    assert (spots / "sheets" / "0" / "0.png").read_bytes()[:4] == b"\x89PNG"
    assert _cells(spots / "region_0.html") == {
        (1, 0): {"c", "det", "open"},
        (2, 0): {"c", "det", "open"},
    }
    assert 'href="spots/region_0.html"' not in gallery  # nothing to look at yet
    assert "All 3 regions" in gallery

    # Scan 1: regions 0 and 1 go on, region 2's track ended; the commit revised scan 0 of
    # region 0 (track 1 now overlaps track 2).
    rows.reads.clear(), drawn.clear()
    rows.put(0, _row(1, 0, overlapping=True))
    for region in (0, 1):
        rows.put(region, _row(1, 1))
    rows.put(0, _row(2, 1, (2.0, 14.0, 13.0)))
    gallery, _ = report.update(rows, 0, 1, final=False)
    assert sorted(rows.reads) == [(0, -1), (1, -1), (2, -1)]  # 2 had rows in the window
    assert sorted(drawn) == [(0, 1), (1, 1)]  # only the new scan's sheets
    cells = _cells(spots / "region_0.html")
    assert cells[(1, 0)] == {"c", "ovl", "rev", "open"}
    assert cells[(2, 0)] == {"c", "det", "open"} and cells[(1, 1)] == {"c", "det", "open"}
    assert 'href="spots/region_0.html"' in gallery  # the region with an overlap

    # Scans 2..6 for region 0 only: a region is read again while the commits may still
    # rewrite its newest rows (scans >= rewritten_from(scan, 3) = scan - 2), then never.
    expected = {2: {0, 1, 2}, 3: {0, 1}, 4: {0}, 5: {0}, 6: {0}}
    for scan in range(2, 7):
        rows.put(0, _row(1, scan))
        rows.reads.clear()
        report.update(rows, 0, scan, final=False)
        assert {r for r, _ in rows.reads} == expected[scan], scan
    cells = _cells(spots / "region_0.html")
    assert {s for (t, s), c in cells.items() if "open" in c} == {5, 6}  # open_from(6, 3) = 5
    assert "rev" in cells[(1, 0)]  # the revision stays visible

    rows.reads.clear()
    report.update(rows, 0, 6, final=True)
    assert rows.reads == [(0, 5)]  # the final pass only drops the open marks
    assert not any("open" in c for c in _cells(spots / "region_0.html").values())
    assert "rev" in _cells(spots / "region_0.html")[(1, 0)]
    listing = (spots / "regions_1.html").read_text()
    assert 'href="region_2.html"' in listing and "crossing" in listing


def test_a_restarted_report_remembers_what_it_showed_first(tmp_path: Path, frames: Path) -> None:
    rows = Rows()
    rows.put(0, _row(1, 0))
    _report(tmp_path, frames).update(rows, 0, 0, final=False)
    rows.put(0, _row(1, 0, overlapping=True))
    rows.put(0, _row(1, 1))
    restarted = _report(tmp_path, frames)  # a new statistics role over the same directory
    restarted.update(rows, 0, 1, final=False)
    cells = _cells(tmp_path / "report" / "spots" / "region_0.html")
    assert "rev" in cells[(1, 0)] and "rev" not in cells[(1, 1)]


def test_the_budget_defers_regions_gallery_first(tmp_path: Path, frames: Path) -> None:
    rows = Rows()
    for region in range(3):
        rows.put(region, _row(1, 0, overlapping=region == 2))
    report = _report(tmp_path, frames, budget_seconds=1e-9)
    gallery, timings = report.update(rows, 0, 0, final=False)
    assert timings["regions"] == 1 and "Strips are being drawn for 2 more" in gallery
    gallery, timings = report.update(rows, 0, 0, final=True)  # region 0 again: drop "open"
    assert timings["regions"] == 3 and "being drawn" not in gallery
    assert 'href="spots/region_2.html"' in gallery  # the one with overlaps
    for region in range(3):
        rows.put(region, _row(1, 1, overlapping=region == 2))
    rows.reads.clear()
    gallery, timings = report.update(rows, 0, 1, final=False)
    assert rows.reads == [(2, -1)]  # the region in the gallery is drawn first
    assert "Strips are being drawn for 2 more" in gallery


def test_missing_frames_leave_grey_cells_and_say_why(
    tmp_path: Path, frames: Path, drawn: list, caplog: pytest.LogCaptureFixture
) -> None:
    (frames / FramePattern(PATTERN).format(1, _window(1)[2], 0)).unlink()
    rows = Rows()
    rows.put(1, _row(1, 0))
    report = _report(tmp_path, frames)
    report.update(rows, 0, 0, final=False)
    page = (tmp_path / "report" / "spots" / "region_1.html").read_text()
    assert "nodata" in page and "missing frame 12 of region 1, scan 0" in page
    assert "region 1 scan 0: no strip image" in caplog.text
    rows.put(1, _row(1, 1))
    report.update(rows, 0, 1, final=False)
    assert drawn == [(1, 0), (1, 1)]  # not tried again


def _metrics(region: int) -> RegionMetrics:
    return RegionMetrics(
        region=region,
        tracks=3,
        first_scan=0,
        last_scan=199,
        overlaps=region % 17,
        misses=region % 5,
        id_changes=region % 7,
        late_births=region % 3,
        broadening=(region % 11) / 10,
        broadening_axis="eta",
    )


def test_the_index_page_stays_small_at_10000_regions(tmp_path: Path) -> None:
    regions = range(10_000)
    metrics = {r: _metrics(r) for r in regions}
    layout = SheetLayout(11, 35, 35, 3)
    thumbs = {r: spot_html.Thumb(f"spots/sheets/{r}/199.png", layout) for r in regions}
    descriptions = {r: f"region number {r}, a long description" for r in regions}
    gallery = spot_html.gallery(looks(metrics), descriptions, thumbs, len(metrics), "spots/")
    page = html.Page(
        run="big",
        final=True,
        generated="now",
        stats=[],
        widths=("width_omega",),
        alerts=[],
        thresholds="",
        figures=[],
        spots=gallery,
        extra_css=spot_html.STRIP_CSS,
    )
    size = len(html.render(page).encode())
    assert size < 2_000_000, size
    assert gallery.count('class="card"') == 4 * 8  # four looks, eight regions each
    assert "All 10000 regions</a> (20 pages)" in gallery
    listing = spot_html.list_page("big", 20, 20, [metrics[r] for r in range(9500, 10_000)], {})
    assert listing.count("<tr>") == 501 and 'href="regions_19.html"' in listing


def test_a_region_page_spans_blocks_of_scans(tmp_path: Path, frames: Path) -> None:
    rows = Rows()
    for scan in range(7):
        rows.put(0, _row(1, scan))
    report = _report(tmp_path, frames, scans_per_page=3)
    report.update(rows, 0, 6, final=False)
    spots = tmp_path / "report" / "spots"
    pages = {"region_0.html", "region_0_scans_0-2.html", "region_0_scans_3-5.html"}
    assert {p.name for p in spots.glob("region_0*.html")} == pages
    newest = spots / "region_0.html"  # scans 6-8
    assert set(_cells(newest)) == {(1, 6)}
    assert 'href="region_0_scans_0-2.html"' in newest.read_text()
    assert 'href="region_0.html"' in (spots / "region_0_scans_0-2.html").read_text()
    # Scan 9 starts a new block: scans 6-8 move to a page of their own.
    rows.put(0, replace(_row(1, 9), position=(2.0, 19.9, 0.0)))  # at the edge: crop inside
    report.update(rows, 0, 9, final=False)
    assert {p.name for p in spots.glob("region_0*.html")} == pages | {"region_0_scans_6-8.html"}
    assert set(_cells(spots / "region_0_scans_6-8.html")) == {(1, 6)}
    assert set(_cells(newest)) == {(1, 9)}
    # A crop of 21 voxels shows the whole 20 x 20 frame: no offset, wherever the track is.
    found = re.search(
        r'src="sheets/0/9.png" alt="" style="left:-(\d+)px;top:-(\d+)px"', newest.read_text()
    )
    assert found and found.groups() == ("0", "0")


def test_the_state_stays_bounded_and_a_torn_one_is_rebuilt(
    tmp_path: Path, frames: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = Rows()
    report = _report(tmp_path, frames, scans_per_page=3)
    for scan in range(10):
        rows.put(0, _row(1, scan))
        report.update(rows, 0, scan, final=False)
    path = tmp_path / "report" / "spots" / "state" / "0.json"
    state = json.loads(path.read_text())
    # Open: scans 8 and 9 (open_from(9, 3) = 8); finished cells: the rest of 8's block (6-8).
    assert sorted(r[0][1] for r in state["open"]) == [8, 9]
    assert sorted(state["cells"]) == ["6", "7"]
    assert state["final"]["tracks"]["1"]["clean"] == 8  # scans 0..7 folded
    path.write_text('{"version": 2, "open": [')  # torn by a crash
    rows.reads.clear()
    rows.put(0, _row(1, 10))
    report.update(rows, 0, 10, final=False)
    assert "spot state of region 0 unreadable" in caplog.text
    assert rows.reads == [(0, None)]  # rebuilt from every row
    assert set(_cells(tmp_path / "report" / "spots" / "region_0.html")) == {(1, 9), (1, 10)}
    state = json.loads(path.read_text())
    assert sorted(r[0][1] for r in state["open"]) == [9, 10] and state["cells"] == {}
    assert (tmp_path / "report" / "spots" / "region_0_scans_6-8.html").exists()
