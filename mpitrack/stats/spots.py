"""The report's spot pages kept up to date: which regions changed, their sheets and pages.

`SpotReport.update` runs with every report refresh. It asks storage which
regions have rows in the scans the commits since the last update may have
rewritten (the new scans and the MHT's open window before them), and for
each such region only: reads its rows from that scan on, merges them into
what its page showed (to mark revised decisions), draws the sheets of scans
that have none yet (one volume read and one detection per new scan: sheets
never depend on the decisions, so revisions cost no image), and rewrites the
page blocks those scans fall in. Cost per scan therefore follows the regions
whose rows changed, not the run's length or the number of regions.

A live update stops after ``budget_seconds``; the regions left wait for the
next refresh (those in the gallery first) and the index page says how many.
The final update draws them all.

On disk, under ``<report>/spots/``: ``region_<id>.html`` (the newest block
of ``scans_per_page`` scans; older blocks in ``region_<id>_scans_<a>-<b>.html``),
``regions_<n>.html`` (every region, 500 a page), ``sheets/<id>/<scan>.png``,
and ``state/<id>.json`` (spot_state.py), so a restarted statistics role goes
on where it stopped.

Per region and update the work is bounded by the scans a commit may rewrite
(``n_scan``) and one page block (``scans_per_page``): older rows are kept
only folded into the look-first tally and as finished HTML cells. The first
update after a (re)start reads every region's rows once.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from mpitrack.frames import FrameError
from mpitrack.stats import spot_html
from mpitrack.stats.joblog import JobLogCounts
from mpitrack.stats.lookfirst import RegionMetrics, RegionTally, looks, region_metrics
from mpitrack.stats.png import encode_indexed, write_bytes
from mpitrack.stats.sheets import FrameSource
from mpitrack.stats.spot_state import RegionState, png_layout
from mpitrack.stats.spotrows import Cell, ShownRow, merge_rows, open_from, rewritten_from
from mpitrack.stats.strips import PALETTE, Sheet, SheetLayout
from mpitrack.storage.base import ReportReads

log = logging.getLogger(__name__)

SPOTS_DIR = "spots"


@dataclass(frozen=True)
class SpotOptions:
    """How the spot pages are drawn.

    source: the run's frames and detection settings.
    n_scan: the MHT window (tracking.n_scan): which scans may still be revised.
    crop: voxels shown around a track along each frame axis.
    scale: pixels per voxel in the sheets.
    budget_seconds: drawing time per live refresh at most.
    scans_per_page: scans per region page.
    job_log: the run's job log, for per-region counts the workers report (hot pixels).
    """

    source: FrameSource
    n_scan: int = 3
    crop: int = 21
    scale: int = 3
    budget_seconds: float = 30.0
    scans_per_page: int = 50
    job_log: Path | None = None


@dataclass(frozen=True)
class _Summary:
    metrics: RegionMetrics
    thumb: tuple[int, SheetLayout] | None  # the newest sheet: scan and layout


class SpotReport:
    """Keeps ``<report>/spots/`` up to date; `update` returns the index page's gallery."""

    def __init__(
        self,
        report_dir: Path,
        options: SpotOptions,
        run: str,
        axes: Sequence[str],
        descriptions: Mapping[int, str],
    ) -> None:
        self.dir = Path(report_dir) / SPOTS_DIR
        self.options = options
        self.run = run
        self.axes = tuple(axes)
        self.descriptions = dict(descriptions)
        self.through: int | None = None
        self.pending: dict[int, int | None] = {}
        self.summaries: dict[int, _Summary] = {}
        self.newest_row: dict[int, int] = {}
        self.hot_pixels = JobLogCounts(options.job_log) if options.job_log else None
        self._gallery_regions: set[int] = set()
        self._lists_stale = True

    # ------------------------------------------------------------------ what changed

    def _queue(self, region: int, from_scan: int | None) -> None:
        if region in self.pending:
            old = self.pending[region]
            from_scan = None if old is None or from_scan is None else min(old, from_scan)
        self.pending[region] = from_scan

    def _find_changes(self, reads: ReportReads, newest: int, final: bool) -> None:
        n_scan = self.options.n_scan
        if self.through is None:
            for region in reads.regions_with_rows(None, newest):
                self._queue(region, None)
        elif newest > self.through:
            since = rewritten_from(self.through + 1, n_scan)
            changed = set(reads.regions_with_rows(since, newest))
            changed |= {r for r, s in self.newest_row.items() if s >= since}
            for region in changed:
                self._queue(region, since)
        if final:  # drop the "open" marks: rewrite every page that shows an open scan
            first_open = open_from(newest, n_scan)
            for region, scan in self.newest_row.items():
                if scan >= first_open:
                    self._queue(region, first_open)
        self.through = newest if self.through is None else max(self.through, newest)

    # ------------------------------------------------------------------ the update

    def update(
        self, reads: ReportReads, first_scan: int, newest: int, final: bool
    ) -> tuple[str, dict[str, float]]:
        """Bring the pages up to date with the rows through scan ``newest``.

        first_scan: the run's first scan (blocks and "late" are counted from it).
        Returns the gallery's HTML (for index.html, relative to the report
        directory) and the seconds spent per part.
        """
        started = time.perf_counter()
        timings = {"sheets": 0.0, "pages": 0.0}
        (self.dir / "state").mkdir(parents=True, exist_ok=True)
        self._find_changes(reads, newest, final)
        timings["find"] = time.perf_counter() - started
        deadline = None if final else started + self.options.budget_seconds
        order = sorted(self.pending, key=lambda r: (r not in self._gallery_regions, r))
        done = 0
        for region in order:
            if deadline is not None and done and time.perf_counter() > deadline:
                break
            from_scan = self.pending.pop(region)
            self._update_region(reads, region, from_scan, first_scan, newest, final, timings)
            done += 1
        if done:
            self._lists_stale = True
        if self.pending:
            log.info(
                "spot strips: %d regions drawn, %d wait for the next refresh",
                done,
                len(self.pending),
            )
        start = time.perf_counter()
        if self._lists_stale:
            self._write_lists()
        html = self._gallery()
        timings["lists"] = time.perf_counter() - start
        timings["regions"] = float(done)
        return html, timings

    def _state_path(self, region: int) -> Path:
        return self.dir / "state" / f"{region}.json"

    def _sheet_src(self, region: int, scan: int) -> str:
        return f"sheets/{region}/{scan}.png"

    def _block(self, scan: int, first_scan: int) -> tuple[int, int]:
        per = self.options.scans_per_page
        lo = first_scan + (scan - first_scan) // per * per
        return lo, lo + per - 1

    def _draw_sheets(self, region: int, state: RegionState, scans: Iterable[int]) -> None:
        """Draw the sheets of ``scans`` that are not on disk yet (frames that fail: noted)."""
        opts = self.options
        for scan in sorted(scans):
            if scan in state.missing:
                continue
            path = self.dir / self._sheet_src(region, scan)
            if path.exists():
                if state.layout is None:
                    n_omega = len(opts.source.windows.get(region, ()))
                    state.layout = png_layout(path, n_omega, opts.scale)
                state.newest_sheet = max(scan, state.newest_sheet or scan)
                continue
            try:
                sheet = opts.source.sheet(region, scan, opts.scale)
            except (FrameError, KeyError, ValueError) as exc:
                reason = str(exc).strip("'\"")
                if not state.missing:
                    log.warning("region %d scan %d: no strip image: %s", region, scan, reason)
                state.missing[scan] = reason
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, encode_sheet(sheet))
            if state.layout is None:
                state.layout = sheet.layout
            elif sheet.layout != state.layout:
                state.other_layouts[scan] = sheet.layout
            state.newest_sheet = max(scan, state.newest_sheet or scan)

    def _cell(self, region: int, state: RegionState, shown: ShownRow, open_: bool) -> str:
        scan = shown.row.scan
        return spot_html.strip_cell(
            Cell(shown.row, open=open_, revised=shown.revised),
            state.layout_of(scan),
            self._sheet_src(region, scan),
            self.options.crop,
            self.axes,
        )

    def _update_region(
        self,
        reads: ReportReads,
        region: int,
        from_scan: int | None,
        first_scan: int,
        newest: int,
        final: bool,
        timings: dict[str, float],
    ) -> None:
        start = time.perf_counter()
        path = self._state_path(region)
        state = RegionState.load(path, region)
        full = from_scan is None or state.open_from is None
        read_from = None if full else min(from_scan, state.open_from)
        rows = reads.spot_rows(region, self.axes, read_from)
        merged = merge_rows(state.open, rows, read_from, state.seen_through)
        if full:
            state.final, state.cells = RegionTally(), {}
        state.seen_through = newest
        self._draw_sheets(region, state, {scan for scan, _ in merged})
        middle = time.perf_counter()
        timings["sheets"] += middle - start

        # Rows that no commit can change any more are folded and their cells finished
        # (after a full read, only for the page blocks that will be written or kept).
        first_open = open_from(newest, self.options.n_scan)
        wanted = self._blocks_to_draw(region, merged, first_scan, first_open) if full else None
        for key in sorted(k for k in merged if k[0] < first_open):
            shown = merged[key]
            state.final.add(shown.row)
            if wanted is None or self._block(key[0], first_scan) in wanted:
                cell = self._cell(region, state, shown, False)
                state.cells.setdefault(key[0], {})[key[1]] = cell
        state.open = {k: v for k, v in merged.items() if k[0] >= first_open}
        state.open_from = first_open

        everything = state.final.copy()
        for key in sorted(state.open):
            everything.add(state.open[key].row)
        if everything.last_scan is None:
            self.summaries.pop(region, None)
            self.newest_row.pop(region, None)
        else:
            metrics = region_metrics(
                region, everything, first_scan, newest, self.options.n_scan, self.axes
            )
            thumb = None
            newest_layout = (
                None if state.newest_sheet is None else state.layout_of(state.newest_sheet)
            )
            if newest_layout is not None:
                thumb = (state.newest_sheet, newest_layout)
            self.summaries[region] = _Summary(metrics, thumb)
            self.newest_row[region] = everything.last_scan
            changed = None if full else read_from
            self._write_pages(region, state, metrics, first_scan, final, changed)
        state.save(path)
        timings["pages"] += time.perf_counter() - middle

    # ------------------------------------------------------------------ pages

    def _has_page(self, region: int, block: tuple[int, int]) -> bool:
        return (self.dir / spot_html.block_file(region, block)).exists()

    def _blocks_to_draw(
        self,
        region: int,
        rows: Mapping[tuple[int, int], ShownRow],
        first_scan: int,
        first_open: int,
    ) -> set[tuple[int, int]]:
        """After a full read: the newest block, those with open scans, those without a page."""
        if not rows:
            return set()
        blocks = {self._block(scan, first_scan) for scan, _ in rows}
        newest = self._block(max(scan for scan, _ in rows), first_scan)
        return {
            b for b in blocks if b == newest or b[1] >= first_open or not self._has_page(region, b)
        }

    def _write_pages(
        self,
        region: int,
        state: RegionState,
        metrics: RegionMetrics,
        first_scan: int,
        final: bool,
        changed_from: int | None,
    ) -> None:
        """Write the page blocks holding scans >= changed_from (None: a full reload)."""

        def block(scan: int) -> tuple[int, int]:
            return self._block(scan, first_scan)

        blocks = {block(s) for s in state.cells} | {block(s) for s, _ in state.open}
        newest_block = block(metrics.last_scan)
        if changed_from is None:  # after a full read: the blocks with cells drawn
            touched = blocks
            start = block(metrics.first_scan)[0]
            run_blocks = range(start, metrics.last_scan + 1, self.options.scans_per_page)
            on_disk = {block(s)[0] for s in run_blocks if self._has_page(region, block(s))}
            state.pages = sorted(set(state.pages) | on_disk)
        else:
            touched = {b for b in blocks if b[1] >= changed_from}
            if state.newest_block is not None and state.newest_block != newest_block[0]:
                # A new block began: the old newest one gets a page of its own now.
                touched.add(block(state.newest_block))
        state.pages = sorted(set(state.pages) | {b[0] for b in touched})
        state.newest_block = newest_block[0]
        generated = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
        for b in sorted(touched):
            cells: dict[tuple[int, int], str] = {}
            for scan in range(b[0], b[1] + 1):
                for track, html in state.cells.get(scan, {}).items():
                    cells[(track, scan)] = html
            for (scan, track), shown in state.open.items():
                if b[0] <= scan <= b[1]:
                    cells[(track, scan)] = self._cell(region, state, shown, not final)
            page = spot_html.RegionPage(
                run=self.run,
                region=region,
                description=self.descriptions.get(region, ""),
                block=b,
                blocks=[block(start) for start in state.pages],
                cells=cells,
                crop=self.options.crop,
                metrics=metrics,
                missing={s: why for s, why in state.missing.items() if b[0] <= s <= b[1]},
                generated=generated,
            )
            name = (
                spot_html.region_file(region)
                if b == newest_block
                else spot_html.block_file(region, b)
            )
            write_bytes(self.dir / name, spot_html.region_page(page).encode())
        # Keep the finished cells of the blocks a later update may still rewrite: the
        # newest block and the one of the oldest open scan.
        oldest_open = min(state.open_from if state.open_from is not None else 0, metrics.last_scan)
        keep_from = min(block(oldest_open)[0], newest_block[0])
        state.cells = {s: c for s, c in state.cells.items() if s >= keep_from}

    def _write_lists(self) -> None:
        per = spot_html.REGIONS_PER_LIST_PAGE
        ordered = [self.summaries[r].metrics for r in sorted(self.summaries)]
        pages = max((len(ordered) + per - 1) // per, 1)
        hot = self._hot_pixels()
        for page in range(1, pages + 1):
            chunk = ordered[(page - 1) * per : page * per]
            text = spot_html.list_page(self.run, page, pages, chunk, self.descriptions, hot)
            write_bytes(self.dir / spot_html.list_file(page), text.encode())
        self._lists_stale = False

    def _hot_pixels(self) -> dict[int, float]:
        return self.hot_pixels.totals() if self.hot_pixels else {}

    def _gallery(self) -> str:
        metrics = {r: s.metrics for r, s in self.summaries.items()}
        chosen = looks(metrics, self._hot_pixels())
        self._gallery_regions = {r for look in chosen for r, _ in look.regions}
        thumbs = {
            r: spot_html.Thumb(f"{SPOTS_DIR}/{self._sheet_src(r, s.thumb[0])}", s.thumb[1])
            for r, s in self.summaries.items()
            if s.thumb is not None and r in self._gallery_regions
        }
        return spot_html.gallery(
            chosen,
            self.descriptions,
            thumbs,
            len(self.summaries),
            f"{SPOTS_DIR}/",
            pending=len(self.pending),
        )


def encode_sheet(sheet: Sheet) -> bytes:
    """A sheet as PNG bytes."""
    return encode_indexed(sheet.pixels, PALETTE)
