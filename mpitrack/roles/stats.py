"""The statistics role: per-scan statistics as each scan completes, and the live report.

Statistics are derived data: nothing here may stop a run. Every error is
logged (with its traceback) and the role goes on with the next scan; a lost
database connection is opened again and the scan computed once more. A scan
whose statistics could not be stored is computed again with the next scan, and
is remembered in ``failed`` so that the run does not end with exit code 0
while statistics are missing. A scan whose statistics are stored already (one
completed before this run) is left as it is: the dispatcher announces those
too, so that a re-run fills in the statistics an earlier run could not store.

Incremental by design: when scan s completes, only the scans whose rows can
still change are recomputed (s and the MHT's open window before it: with
``n_scan`` = 3 the rows of s-2 and s-1 may have been revised by the commit of
s); older scans' statistics are kept in memory (and loaded from scan_stats
when the role restarts). The report is redrawn from those, at most every
``refresh_interval`` seconds and never more than a fifth of the time, so a
slow figure cannot make the role fall behind; `finish` writes the final
report when the run ends.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from mpitrack.stats.report import ReportOptions, ReportWriter, options_from_config
from mpitrack.stats.summary import ScanStats
from mpitrack.storage.base import ConnectionLost, StatsStore
from mpitrack.transport.base import StatsLink

log = logging.getLogger(__name__)

# Report redraws take at most this share of the role's time.
_MAX_REPORT_SHARE = 0.2


class ScanStatistics:
    """Computes, stores and logs one scan's statistics; callable as ``stats(scan)``.

    store: where the rows are read and the statistics kept.
    config: the experiment config (axis names, run name, region descriptions,
        the MHT window, the work directory); without it the axes are read from
        the stored features and no report is written unless report_dir is given.
    report_dir: where the live report goes (default ``<workdir>/report``);
        ``report=False`` turns the report off.
    """

    def __init__(
        self,
        store: StatsStore,
        config=None,
        report_dir: Path | None = None,
        *,
        report: bool = True,
        refresh_interval: float = 10.0,
        revise: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.options: ReportOptions | None = options_from_config(config) if config else None
        if revise is None:
            revise = max(int(config.tracking.n_scan) - 1, 0) if config else 2
        self.revise = revise
        if report_dir is None and config is not None:
            report_dir = Path(config.workdir) / "report"
        self.writer: ReportWriter | None = None
        self._report_dir = report_dir if report else None
        self.refresh_interval = refresh_interval
        self.clock = clock
        self.stats: dict[int, ScanStats] | None = None
        self._next_refresh = float("-inf")
        self.refreshes = 0
        self.failed: set[int] = set()

    def _ready(self) -> tuple[dict[int, ScanStats], ReportOptions]:
        if self.options is None:
            self.options = ReportOptions(axes=self.store.infer_axes())
        if self.stats is None:
            self.stats = self.store.load_scan_stats()
        if self.writer is None and self._report_dir is not None:
            self.writer = ReportWriter(self._report_dir, self.options)
        return self.stats, self.options

    def __call__(self, scan: int) -> ScanStats | None:
        newest: ScanStats | None = None
        for attempt in (1, 2):
            try:
                newest = self._compute(scan)
                break
            except ConnectionLost as exc:
                # A restarted database: one new connection, and the scan once more.
                log.warning("statistics for scan %d: database connection lost: %s", scan, exc)
                if attempt == 2 or not self._reconnect():
                    self.failed.add(scan)
                    return None
            except Exception:
                # Statistics are derived data: a failure is logged, the run goes on.
                log.exception("statistics for scan %d failed", scan)
                self.store.rollback()
                self.failed.add(scan)
                return None
        if newest is None:
            return None  # stored before this run
        log.info("%s", newest.summary())
        if self.clock() >= self._next_refresh:
            self.refresh(final=False)
        return newest

    def _compute(self, scan: int) -> ScanStats | None:
        """Compute and store ``scan`` and the scans before it that its commit may have
        revised; None when ``scan``'s statistics were stored before this run."""
        stats, options = self._ready()
        if scan in stats and scan not in self.failed:
            return None
        newest: ScanStats | None = None
        for s in range(scan - self.revise, scan + 1):
            if s != scan and s not in stats and s not in self.failed:
                continue  # not a scan of this run (or before its first)
            result = self.store.compute_scan(s, options.axes)
            self.store.save_scan_stats(result)
            stats[s] = result
            self.failed.discard(s)
            newest = result
        return newest

    def _reconnect(self) -> bool:
        try:
            self.store.reconnect()
        except Exception:
            log.exception("statistics: could not reconnect to the database")
            return False
        return True

    def refresh(self, final: bool) -> bool:
        """Redraw the report now; False (logged) when it could not be written."""
        try:
            stats, _ = self._ready()
            if self.writer is None:
                return False
            start = self.clock()
            timings = self.writer.write(self.store, stats, final=final)
            spent = self.clock() - start
        except Exception:
            log.exception("writing the report in %s failed", self._report_dir)
            self.store.rollback()
            return False
        self.refreshes += 1
        self._next_refresh = self.clock() + max(self.refresh_interval, spent / _MAX_REPORT_SHARE)
        log.debug(
            "report %s in %.2f s (%s)",
            "finalised" if final else "refreshed",
            spent,
            ", ".join(f"{k} {v:.2f}" for k, v in timings.items()),
        )
        if final:
            log.info("final report: %s", Path(self.writer.out_dir) / "index.html")
        return True

    def finish(self) -> None:
        """The run is over: write the final report (the statistics are already final)."""
        self.refresh(final=True)


def serve(stats: ScanStatistics, link: StatsLink) -> int:
    """Compute statistics for every scan the dispatcher reports, then finalise; return how
    many scans (a scan announced again, after a Redis restart or by a new dispatcher,
    counts once)."""
    scans: set[int] = set()
    while (scan := link.next_scan()) is not None:
        stats(scan)
        scans.add(scan)
    finish = getattr(stats, "finish", None)
    if finish is not None:
        finish()
    return len(scans)
