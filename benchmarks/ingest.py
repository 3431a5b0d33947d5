"""Raw-frame ingestion: the cutter's MB/s against the disk's read ceiling, same files, same run.

Writes one scan of full detector frames (default: two Dexela 2923 panels,
3888 x 3072 uint16, one HDF5 stack per panel as at CHESS, chunked by frame) to
a temporary directory, defines regions on four rings across both panels with
omega windows covering every frame (so every raw frame is needed; --window W
gives each region W staggered frames instead: fewer cuts per raw frame), then
alternates, ``--runs`` times:

- ceiling: the page cache is emptied for the files (fsync + posix_fadvise
  DONTNEED) and the files are read sequentially with plain ``read`` calls
  (8 MiB buffers): the disk's read ceiling for exactly these bytes;
- ingest: the cache is emptied again and a fresh Cutter (samplers loaded from
  their cache) reads every frame once and writes every region's cut.

Reports medians: ingest MB/s (raw bytes read / wall time of the whole cut,
including writing the cut files) and its ratio to the ceiling, with the time
split into read / interpolate / write. Memory: one extra ingest under
tracemalloc gives the peak of traced allocations (numpy's included), to compare
with one frame and with the whole scan's stack (which is never held).
Prints one JSON document (and writes it to --out if given). Usage:
    python benchmarks/ingest.py [--frames 12] [--rings 4] [--regions-per-ring 25] [--runs 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np

from mpitrack.detector.cutter import Cutter
from mpitrack.detector.instrument import Instrument, PanelSpec
from mpitrack.detector.regions import RingSpec, regions_from_rings
from mpitrack.detector.sampling import cached_sampler
from mpitrack.detector.sources import Hdf5Stacks
from mpitrack.regions import omega_window

DATASET = "/imageseries/images"
PATTERN = "scan_{scan}/region_{region}_frame_{frame}_scan_{scan}.npy"


def dexelas(rows: int, cols: int, frames: int) -> Instrument:
    common = dict(rows=rows, cols=cols, pixel_size=(0.0748, 0.0748), distance=1000.0)
    return Instrument(
        panels=(
            PanelSpec(name="ff1", beam_center=(rows / 2, cols + 138.0), **common),  # type: ignore[arg-type]
            PanelSpec(name="ff2", beam_center=(rows / 2, -138.0), flip="lr", **common),  # type: ignore[arg-type]
        ),
        frames_per_scan=frames,
    )


def write_raw(directory: Path, instrument: Instrument, frames: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for panel in instrument.panels:
        path = directory / f"{panel.name}_000000.h5"
        with h5py.File(path, "w") as f:
            d = f.create_dataset(
                DATASET,
                (frames, panel.rows, panel.cols),
                np.uint16,
                chunks=(1, panel.rows, panel.cols),
            )
            base = rng.poisson(20, (panel.rows, panel.cols)).astype(np.uint16)
            for k in range(frames):
                d[k] = np.roll(base, 17 * k, axis=1)  # different bytes per frame
        paths.append(path)
    return paths


def evict(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def ceiling(paths: list[Path]) -> tuple[float, int]:
    evict(paths)
    total = 0
    buffer = bytearray(8 << 20)
    t0 = time.perf_counter()
    for path in paths:
        with open(path, "rb", buffering=0) as fp:
            while n := fp.readinto(buffer):
                total += n
    return time.perf_counter() - t0, total


def make_cutter(instrument, grids, raw: Path, out: Path, cache: Path) -> Cutter:
    samplers = {g.id: cached_sampler(instrument, g, cache) for g in grids}
    n = instrument.frames_per_scan
    windows = {g.id: omega_window(g.frames[0], g.frames[1], n) for g in grids}
    source = Hdf5Stacks(instrument, raw, "{panel}_{scan:06d}.h5", DATASET, settle_s=0.0)
    return Cutter(
        source, samplers, windows, out, PATTERN, first_scan=0, last_scan=0, poll_budget_s=3600
    )


def ingest(instrument, grids, raw: Path, paths: list[Path], work: Path, cache: Path, run: int):
    out = work / f"cuts{run}"
    cutter = make_cutter(instrument, grids, raw, out, cache)
    evict(paths)
    t0 = time.perf_counter()
    while not cutter.finished():
        cutter.poll()
    seconds = time.perf_counter() - t0
    cutter.close()
    shutil.rmtree(out)
    return seconds, cutter.stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3888)
    parser.add_argument("--cols", type=int, default=3072)
    parser.add_argument("--frames", type=int, default=12, help="frames in the scan")
    parser.add_argument("--rings", type=int, default=4)
    parser.add_argument("--regions-per-ring", type=int, default=25, help="per panel side")
    parser.add_argument(
        "--window",
        type=int,
        default=None,
        help="omega frames per region, staggered (default: every frame, the heaviest case)",
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="work directory (default /tmp)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    args = parser.parse_args()

    instrument = dexelas(args.rows, args.cols, args.frames)
    radius_max = 0.45 * args.rows * 0.0748
    rings = []
    for i in range(args.rings):
        tth = float(np.degrees(np.arctan(radius_max * (i + 2) / (args.rings + 1) / 1000.0)))
        for eta in ((-40.0, 40.0), (140.0, 220.0)):
            rings.append(
                RingSpec(
                    tth=tth,
                    width=0.3,
                    eta=eta,
                    n_regions=args.regions_per_ring,
                    omega=((0.0, 360.0),),
                )
            )
    grids = regions_from_rings(instrument, rings)
    if args.window is not None:
        n, w = args.frames, args.window
        grids = [
            dataclasses.replace(g, frames=((i * 7) % n, (i * 7 + w - 1) % n))
            for i, g in enumerate(grids)
        ]
    work = Path(tempfile.mkdtemp(prefix="mpitrack-ingest-", dir=args.dir))
    try:
        raw = work / "raw"
        raw.mkdir()
        paths = write_raw(raw, instrument, args.frames)
        cache = work / "samplers"
        t0 = time.perf_counter()
        for g in grids:
            cached_sampler(instrument, g, cache)
        build_s = time.perf_counter() - t0
        ceilings, ingests, stats = [], [], []
        raw_bytes = 0
        for run in range(args.runs):
            seconds, raw_bytes = ceiling(paths)
            ceilings.append(seconds)
            seconds, st = ingest(instrument, grids, raw, paths, work, cache, run)
            ingests.append(seconds)
            stats.append(st)
        file_bytes = sum(p.stat().st_size for p in paths)
        tracemalloc.start()
        ingest(instrument, grids, raw, paths, work, cache, args.runs)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        mb = 1e6
        frame_bytes = sum(p.rows * p.cols * 2 for p in instrument.panels)
        median_ceiling = statistics.median(ceilings)
        median_ingest = statistics.median(ingests)
        read_mb = stats[0].bytes_read / mb
        result = {
            "benchmark": "ingest",
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "panels": [[p.rows, p.cols] for p in instrument.panels],
            "frames": args.frames,
            "regions": len(grids),
            "region_samples": int(sum(g.shape[0] * g.shape[1] for g in grids)),
            "window_frames": args.window or args.frames,
            "cuts_per_run": stats[0].cuts_written,
            "cuts_per_raw_frame": round(stats[0].cuts_written / max(stats[0].frames_read, 1), 1),
            "raw_file_mb": round(file_bytes / mb, 1),
            "raw_frames_read_mb": round(read_mb, 1),
            "sampler_build_s": round(build_s, 2),
            "ceiling_mb_s": round(raw_bytes / mb / median_ceiling, 1),
            "ingest_mb_s": round(read_mb / median_ingest, 1),
            "ratio_to_ceiling": round(
                (read_mb / median_ingest) / (raw_bytes / mb / median_ceiling), 3
            ),
            "ingest_split_s": {
                "read": round(statistics.median(s.read_seconds for s in stats), 3),
                "interpolate": round(statistics.median(s.cut_seconds for s in stats), 3),
                "write_cuts": round(statistics.median(s.write_seconds for s in stats), 3),
                "total": round(median_ingest, 3),
            },
            "runs": {
                "ceiling_s": [round(s, 3) for s in ceilings],
                "ingest_s": [round(s, 3) for s in ingests],
            },
            "memory_mb": {
                "traced_peak": round(peak / mb, 1),
                "one_frame_all_panels": round(frame_bytes / mb, 1),
                "whole_scan_stack": round(frame_bytes * args.frames / mb, 1),
            },
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
