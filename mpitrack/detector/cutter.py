"""The cutter: reads each raw detector frame once and cuts every region's slice of it.

It has the frame scanner's interface (``poll() -> list[FrameKey]``), so rank 0
uses it in place of ``DirectoryScanner`` and becomes the fan-out reader. The
cuts go one of two ways:

- in memory (a `VolumeBuffer`, ``detector.cut_files: false``): each cut goes
  into its (region, scan) volume, which the dispatcher sends with the job
  (fanout.py). Only (region, scan) pairs the run still ``needed`` are cut, and
  no frame of a scan ``memory_scans`` past the oldest held one is read, so
  memory stays bounded. Nothing is listed on disk at start: after a restart the
  raw frames of the scans not yet committed are read again.
- into files: ordinary frame files (``frames.pattern`` names under
  ``frames.directory``, written atomically: ``.<name>.tmp`` then
  ``os.replace``), which the workers load with ``load_volume``; for
  `mpitrack detector cut` (process mode) and archiving.

- One read per raw frame: a frame is read only if some region's window holds
  it, once, and cut for every such region (frames no region needs are never
  read).
- Restart-safe (files): progress is the cut files themselves. The first poll lists the
  cut directory (reporting what is there, so a restarted dispatcher registers
  it) and a frame is read again only if some region still lacks its cut.
- Cut files are written by a few threads (file creation is latency-bound) and
  reported only once renamed into place.
- Bounded: at most ``poll_budget_s`` of cutting per poll, so rank 0 keeps
  dispatching jobs while a backlog is cut. One reader thread reads the next
  ``READ_AHEAD`` frames while this one is cut (raw reads release the GIL), so
  at most three frames are in use; a prefetched frame is kept across polls,
  never re-read.
  Once a frame is cut its buffers go back to the source (``recycle``) for reuse.
- Masked pixels: raw pixels equal to a ``frames.mask`` marker value (or NaN)
  are left out of the interpolation; a region sample with none left is NaN in
  the cut file, which the workers read as masked (see sampling.py).
- Scans: from ``first_scan`` up; a scan is finished when every needed frame is
  cut, and scans are polled up to ``lookahead`` past the newest scan that had a
  ready frame (so a skipped scan number does not stall later ones).
"""

from __future__ import annotations

import io
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mpitrack.detector import RawFrameError
from mpitrack.detector.fanout import Needed, VolumeBuffer
from mpitrack.detector.sampling import RegionSampler
from mpitrack.detector.sources import FrameSource
from mpitrack.frames import DirectoryScanner, FrameKey, FramePattern

log = logging.getLogger(__name__)

#: Frames the reader thread reads ahead of the one being cut: two keep it reading
#: while a cut takes longer than a read now and then (a loaded machine), at the
#: cost of one more frame in memory.
READ_AHEAD = 2

#: Threads writing cut files: small-file creation is latency-bound (journal,
#: rename), so a few writes in flight overlap it with the next interpolation.
WRITE_THREADS = 4


@dataclass
class CutStats:
    """Counters for logs and the ingest benchmark (in memory: ``cuts_written`` counts the
    cuts kept, ``write_seconds`` their copy into the volumes)."""

    frames_read: int = 0
    bytes_read: int = 0
    cuts_written: int = 0
    read_seconds: float = 0.0
    cut_seconds: float = 0.0
    write_seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


class Cutter:
    """Turns raw frames into region frames; ``poll()`` returns the region frames it cut.

    buffer: cut into memory (volumes for the jobs) instead of files.
    needed: whether (region, scan) is still wanted (the scheduler's answer; set by
        the runtime once the scheduler exists); None: every region, every scan.
    """

    def __init__(
        self,
        source: FrameSource,
        samplers: Mapping[int, RegionSampler],
        windows: Mapping[int, tuple[int, ...]],
        out_dir: str | os.PathLike[str],
        pattern: FramePattern | str,
        *,
        first_scan: int = 0,
        last_scan: int | None = None,
        poll_budget_s: float = 1.0,
        lookahead: int = 2,
        mask_values: Sequence[float] = (),
        buffer: VolumeBuffer | None = None,
        needed: Needed | None = None,
    ) -> None:
        missing = sorted(set(windows) - set(samplers))
        if missing:
            raise ValueError(f"regions {missing} have no sampling grid")
        self.source = source
        self.samplers = dict(samplers)
        self.out_dir = Path(out_dir)
        self.pattern = pattern if isinstance(pattern, FramePattern) else FramePattern(pattern)
        self.first_scan = first_scan
        self.last_scan = last_scan
        self.poll_budget_s = poll_budget_s
        self.lookahead = lookahead
        self.mask_values = tuple(float(v) for v in mask_values)
        self.buffer = buffer
        self.needed = needed
        self.stats = CutStats()
        frame_regions: dict[int, list[int]] = {}
        for region, window in sorted(windows.items()):
            for frame in window:
                frame_regions.setdefault(frame, []).append(region)
        self._frame_regions = {f: frozenset(r) for f, r in frame_regions.items()}
        self._done: dict[int, dict[int, set[int]]] = {}  # scan -> frame -> regions cut
        self._finished: set[int] = set()
        self._next = first_scan
        self._newest = first_scan - 1
        self._started = False
        self._dirs: set[Path] = set()
        self._headers: dict[tuple[tuple[int, ...], str], bytes] = {}
        self._reader: ThreadPoolExecutor | None = None
        self._writers: ThreadPoolExecutor | None = None
        self._prefetched: dict[tuple[int, int], Future] = {}
        self._wanted: dict[int, frozenset[int]] = {}  # scan -> needed regions, this poll

    # -- progress ---------------------------------------------------------------

    def _mark(self, key: FrameKey) -> None:
        self._done.setdefault(key.scan, {}).setdefault(key.frame, set()).add(key.region)

    def _regions_for(self, frame: int, scan: int) -> frozenset[int]:
        """The regions to cut from this frame: those whose window holds it, if needed."""
        regions = self._frame_regions[frame]
        if self.needed is None:
            return regions
        wanted = self._wanted.get(scan)
        if wanted is None:
            wanted = self._wanted[scan] = frozenset(
                r for r in self.samplers if self.needed(r, scan)
            )
        return regions & wanted

    def _missing(self, scan: int) -> set[int]:
        done = self._done.get(scan, {})
        return {
            f for f in self._frame_regions if not self._regions_for(f, scan) <= done.get(f, set())
        }

    def _in_range(self, scan: int) -> bool:
        return scan >= self.first_scan and (self.last_scan is None or scan <= self.last_scan)

    def _existing(self) -> list[FrameKey]:
        """Cut files already there (a restart): mark them done and report them."""
        if not self.out_dir.is_dir():
            return []
        found = DirectoryScanner(self.out_dir, self.pattern, racy_s=0.0).poll()
        keep = [
            k
            for k in found
            if k.region in self.samplers
            and self._in_range(k.scan)
            and k.region in self._frame_regions.get(k.frame, ())
        ]
        for key in keep:
            self._mark(key)
            self._newest = max(self._newest, key.scan)
        if keep:
            log.info("cutter: %d region frames already cut in %s", len(keep), self.out_dir)
        return keep

    def take(self, region: int, scan: int) -> np.ndarray:
        """The complete volume of (region, scan) cut in memory, handed over for its job."""
        if self.buffer is None:
            raise LookupError("this cutter writes files: it holds no volumes")
        return self.buffer.take(region, scan)

    def skip_through(self, scan: int) -> None:
        """Every region committed ``scan`` before this run (in memory, where no cut files
        tell it): start past it, as if it had been cut."""
        if scan >= self._next:
            self._next = scan + 1
            self._newest = max(self._newest, scan)

    def finished_through(self) -> int:
        """The last scan before which every scan is completely cut."""
        return self._next - 1

    # -- polling ----------------------------------------------------------------

    def poll(self) -> list[FrameKey]:
        """Cut what became readable (within the time budget); the region frames written."""
        out: list[FrameKey] = []
        if not self._started:
            self._started = True
            if self.buffer is None:
                out.extend(self._existing())
        self._wanted.clear()
        if self.buffer is not None and self.needed is not None:
            self.buffer.drop_unneeded(self.needed)
        deadline = time.monotonic() + self.poll_budget_s
        top = self._newest + self.lookahead
        if self.last_scan is not None:
            top = min(top, self.last_scan)
        for scan in range(self._next, top + 1):
            if scan in self._finished:
                continue
            if self.buffer is not None and not self.buffer.may_start(scan):
                break  # the memory bound: wait until older scans are dispatched
            missing = self._missing(scan)
            if missing:
                ready = self.source.ready(scan, missing)
                if ready:
                    self._newest = max(self._newest, scan)
                frames = sorted(ready)
                for i, frame in enumerate(frames):
                    try:
                        panels = self._fetch(scan, frame)
                        for ahead in frames[i + 1 : i + 1 + READ_AHEAD]:
                            self._prefetch(scan, ahead)
                        out.extend(self._cut_frame(scan, frame, panels))
                        self.source.recycle(scan, frame)  # its buffers may be reused
                    except RawFrameError as exc:
                        log.warning(
                            "cannot read scan %d frame %d: %s (will retry)", scan, frame, exc
                        )
                        self.stats.errors.append(str(exc))
                        break
                    if time.monotonic() >= deadline:
                        return out
                missing = self._missing(scan)
            if not missing:
                self._finish(scan)
        while self._next in self._finished:
            self._finished.discard(self._next)
            self._next += 1
        return out

    def _finish(self, scan: int) -> None:
        for key in [k for k in self._prefetched if k[0] == scan]:
            self._prefetched.pop(key)  # read ahead, then no longer needed
        self._finished.add(scan)
        self._done.pop(scan, None)
        self.source.release(scan)
        log.debug("cutter: scan %d completely cut", scan)

    def finished(self) -> bool:
        """Every scan through last_scan is cut (never for an open-ended run)."""
        return self.last_scan is not None and self._next > self.last_scan

    def _timed_read(self, scan: int, frame: int) -> tuple[list[np.ndarray], float]:
        t0 = time.perf_counter()
        panels = self.source.read(scan, frame)
        return panels, time.perf_counter() - t0

    def _prefetch(self, scan: int, frame: int) -> None:
        if (scan, frame) not in self._prefetched:
            if self._reader is None:
                self._reader = ThreadPoolExecutor(1, thread_name_prefix="mpitrack-reader")
            self._prefetched[(scan, frame)] = self._reader.submit(self._timed_read, scan, frame)

    def _fetch(self, scan: int, frame: int) -> list[np.ndarray]:
        """The frame's panels: the prefetched read if there is one, else a read now."""
        future = self._prefetched.pop((scan, frame), None)
        panels, seconds = future.result() if future is not None else self._timed_read(scan, frame)
        self.stats.frames_read += 1
        self.stats.bytes_read += sum(p.size * p.dtype.itemsize for p in panels)
        self.stats.read_seconds += seconds
        return panels

    def _cut_frame(self, scan: int, frame: int, panels: list[np.ndarray]) -> list[FrameKey]:
        done = self._done.setdefault(scan, {}).setdefault(frame, set())
        todo = sorted(self._regions_for(frame, scan) - done)
        if self.buffer is not None:
            return self._keep_frame(scan, frame, panels, todo, done)
        if self._writers is None:
            self._writers = ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="mpitrack-cut")
        writes = []
        for region in todo:
            t2 = time.perf_counter()
            cut = self.samplers[region].apply(panels, self.mask_values)
            self.stats.cut_seconds += time.perf_counter() - t2
            key = FrameKey(region, frame, scan)
            writes.append((key, self._writers.submit(self._write, key, cut)))
        t3 = time.perf_counter()
        written = []
        for key, future in writes:
            future.result()  # an OSError here fails the poll, as a full disk should
            done.add(key.region)
            written.append(key)
        self.stats.write_seconds += time.perf_counter() - t3
        self.stats.cuts_written += len(written)
        return written

    def _keep_frame(
        self, scan: int, frame: int, panels: list[np.ndarray], todo: list[int], done: set[int]
    ) -> list[FrameKey]:
        """Cut into the volumes in memory (no files)."""
        assert self.buffer is not None
        kept = []
        for region in todo:
            t2 = time.perf_counter()
            cut = self.samplers[region].apply(panels, self.mask_values)
            t3 = time.perf_counter()
            self.buffer.put(region, frame, scan, cut)
            self.stats.cut_seconds += t3 - t2
            self.stats.write_seconds += time.perf_counter() - t3
            done.add(region)
            kept.append(FrameKey(region, frame, scan))
        self.stats.cuts_written += len(kept)
        return kept

    def _write(self, key: FrameKey, cut: np.ndarray) -> None:
        path = self.out_dir / self.pattern.format(key.region, key.frame, key.scan)
        parent = path.parent
        if parent not in self._dirs:
            parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(parent)
        header = self._header(cut)
        tmp = parent / f".{path.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, header)
            os.write(fd, memoryview(np.ascontiguousarray(cut)).cast("B"))
        finally:
            os.close(fd)
        os.replace(tmp, path)

    def _header(self, cut: np.ndarray) -> bytes:
        """The .npy header for this shape and dtype (built once: np.save's is slow)."""
        key = (cut.shape, cut.dtype.str)
        header = self._headers.get(key)
        if header is None:
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                buffer, np.lib.format.header_data_from_array_1_0(np.ascontiguousarray(cut))
            )
            header = self._headers[key] = buffer.getvalue()
        return header

    def close(self) -> None:
        for pool in (self._reader, self._writers):
            if pool is not None:
                pool.shutdown(wait=True)
        self._reader = self._writers = None
        self._prefetched.clear()
        self.source.close()


def cut_all(cutter: Cutter, idle_s: float = 0.0, interval: float = 0.2) -> int:
    """Poll until nothing new has been cut for ``idle_s`` seconds (or all scans are cut).

    Returns the number of region frames reported. For `mpitrack detector cut` and
    tests; the runtime calls ``poll`` from the dispatcher loop instead.
    """
    total = 0
    quiet_since = time.monotonic()
    while True:
        new = cutter.poll()
        total += len(new)
        now = time.monotonic()
        if new:
            quiet_since = now
            continue
        if cutter.finished() or now - quiet_since >= idle_s:
            return total
        time.sleep(interval)
