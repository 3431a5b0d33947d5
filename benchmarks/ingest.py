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
- memory: the cache is emptied again and a fresh Cutter (samplers loaded from
  their cache) reads every frame once and cuts every region's slice into its
  (region, scan) volume in memory (``detector.cut_files: false``, what
  `mpitrack run` does); each volume is taken as soon as it is whole, as the
  dispatcher does when it sends it with its job (the MPI send itself is an
  ``Isend`` that rank 0 does not wait for: not part of this figure);
- files: the same with a cut file written per region and frame
  (``detector.cut_files: true``, `mpitrack detector cut`).

Each path's run comes right after a ceiling read of its own (the machine's
load drifts). Reports medians: MB/s of each path (raw bytes read / wall time of
the whole cut) and their ratios to the median ceiling, the median of the paired
ratios (each run against the ceiling read just before it), CPU milliseconds per
raw frame (all threads; what a loaded machine's ratio depends on), and the time
split into read / interpolate / write (memory: copy into the volume). Memory:
one extra ingest per path under tracemalloc gives the peak of traced
allocations (numpy's included), to compare with one frame, with one scan's
region volumes (the in-memory path's bound per scan held) and with the whole
raw scan (never held).
Prints one JSON document (and writes it to --out if given). Usage:
    python benchmarks/ingest.py [--frames 12] [--rings 4] [--regions-per-ring 25] [--runs 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
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
from mpitrack.detector.fanout import VolumeBuffer
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


def make_cutter(
    instrument, grids, raw: Path, out: Path, cache: Path, in_memory: bool, budget_s: float
) -> Cutter:
    samplers = {g.id: cached_sampler(instrument, g, cache) for g in grids}
    n = instrument.frames_per_scan
    windows = {g.id: omega_window(g.frames[0], g.frames[1], n) for g in grids}
    source = Hdf5Stacks(instrument, raw, "{panel}_{scan:06d}.h5", DATASET, settle_s=0.0)
    buffer = None
    if in_memory:
        buffer = VolumeBuffer(windows, {g.id: (g.shape[0], g.shape[1]) for g in grids})
    return Cutter(
        source,
        samplers,
        windows,
        out,
        PATTERN,
        first_scan=0,
        last_scan=0,
        poll_budget_s=budget_s,
        buffer=buffer,
    )


def ingest(
    instrument,
    grids,
    raw: Path,
    paths: list[Path],
    work: Path,
    cache: Path,
    run: int,
    in_memory: bool,
    budget_s: float,
):
    """One cold cut of the scan; (seconds, CPU seconds of all threads, stats, volumes
    handed over)."""
    out = work / f"cuts{run}"
    cutter = make_cutter(instrument, grids, raw, out, cache, in_memory, budget_s)
    n = instrument.frames_per_scan
    need = {g.id: len(omega_window(g.frames[0], g.frames[1], n)) for g in grids}
    have: dict[tuple[int, int], int] = {}
    taken = 0
    evict(paths)
    t0, c0 = time.perf_counter(), time.process_time()
    while not cutter.finished():
        for key in cutter.poll():
            if in_memory:
                pair = (key.region, key.scan)
                have[pair] = have.get(pair, 0) + 1
                if have[pair] == need[key.region]:
                    cutter.take(*pair)  # the dispatcher sends it with the job
                    taken += 1
    seconds = time.perf_counter() - t0
    cutter.close()  # waits for the reader thread: its CPU is counted
    cpu = time.process_time() - c0
    shutil.rmtree(out, ignore_errors=True)
    return seconds, cpu, cutter.stats, taken


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
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--poll-budget", type=float, default=1.0, help="detector.poll_budget_s (the default)"
    )
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
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="mpitrack-ingest-", dir=args.dir))
    paths_kept = ("memory", "files")
    try:
        raw = work / "raw"
        raw.mkdir()
        paths = write_raw(raw, instrument, args.frames)
        cache = work / "samplers"
        t0 = time.perf_counter()
        for g in grids:
            cached_sampler(instrument, g, cache)
        build_s = time.perf_counter() - t0
        ceilings: list[float] = []
        seconds: dict[str, list[float]] = {p: [] for p in paths_kept}
        stats: dict[str, list] = {p: [] for p in paths_kept}
        taken = 0
        raw_bytes = 0
        paired: dict[str, list[float]] = {p: [] for p in paths_kept}
        cpu: dict[str, list[float]] = {p: [] for p in paths_kept}
        ceiling_cpu: list[float] = []
        ingest_once = functools.partial(ingest, instrument, grids, raw, paths, work, cache)
        for run in range(args.runs):
            # each path right after its own ceiling read (a shared machine drifts), the
            # order alternating so that neither always goes first
            for path in paths_kept if run % 2 == 0 else paths_kept[::-1]:
                c0 = time.process_time()
                s, raw_bytes = ceiling(paths)
                ceiling_cpu.append(time.process_time() - c0)
                ceilings.append(s)
                s, cpu_s, st, n_taken = ingest_once(run, path == "memory", args.poll_budget)
                cpu[path].append(cpu_s)
                paired[path].append(ceilings[-1] / s * st.bytes_read / raw_bytes)
                seconds[path].append(s)
                stats[path].append(st)
                taken = max(taken, n_taken)
        file_bytes = sum(p.stat().st_size for p in paths)
        peaks = {}
        for path in paths_kept:
            tracemalloc.start()
            ingest_once(args.runs, path == "memory", args.poll_budget)
            peaks[path] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        mb = 1e6
        frame_bytes = sum(p.rows * p.cols * 2 for p in instrument.panels)
        volume_bytes = VolumeBuffer(
            {g.id: omega_window(g.frames[0], g.frames[1], args.frames) for g in grids},
            {g.id: (g.shape[0], g.shape[1]) for g in grids},
        ).scan_bytes
        ceiling_mb_s = raw_bytes / mb / statistics.median(ceilings)
        first = stats["memory"][0]
        read_mb = first.bytes_read / mb
        rate = {p: read_mb / statistics.median(seconds[p]) for p in paths_kept}
        result = {
            "benchmark": "ingest",
            "host": platform.node(),
            "cpus": os.cpu_count(),
            # others' load on a shared machine slows the CPU-bound paths, not the ceiling
            "load_average_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)],
            "panels": [[p.rows, p.cols] for p in instrument.panels],
            "frames": args.frames,
            "regions": len(grids),
            "region_samples": int(sum(g.shape[0] * g.shape[1] for g in grids)),
            "window_frames": args.window or args.frames,
            "cuts_per_run": first.cuts_written,
            "cuts_per_raw_frame": round(first.cuts_written / max(first.frames_read, 1), 1),
            "volumes_handed_over": taken,
            "raw_file_mb": round(file_bytes / mb, 1),
            "raw_frames_read_mb": round(read_mb, 1),
            "sampler_build_s": round(build_s, 2),
            "runs": args.runs,
            "ceiling_mb_s": round(ceiling_mb_s, 1),
            "memory_mb_s": round(rate["memory"], 1),
            "files_mb_s": round(rate["files"], 1),
            "memory_ratio_to_ceiling": round(rate["memory"] / ceiling_mb_s, 3),
            "files_ratio_to_ceiling": round(rate["files"] / ceiling_mb_s, 3),
            "memory_over_files": round(rate["memory"] / rate["files"], 2),
            "paired_ratio_median": {p: round(statistics.median(paired[p]), 3) for p in paths_kept},
            "cpu_ms_per_raw_frame": {
                "ceiling": round(
                    1e3 * statistics.median(ceiling_cpu) / max(first.frames_read, 1), 1
                ),
                **{
                    p: round(1e3 * statistics.median(cpu[p]) / max(first.frames_read, 1), 1)
                    for p in paths_kept
                },
            },
            "split_s": {
                p: {
                    "read": round(statistics.median(s.read_seconds for s in stats[p]), 3),
                    "interpolate": round(statistics.median(s.cut_seconds for s in stats[p]), 3),
                    "write_or_copy": round(statistics.median(s.write_seconds for s in stats[p]), 3),
                    "total": round(statistics.median(seconds[p]), 3),
                }
                for p in paths_kept
            },
            "paired_ratios": {p: [round(r, 3) for r in paired[p]] for p in paths_kept},
            "runs_s": {
                "ceiling": [round(s, 3) for s in ceilings],
                **{p: [round(s, 3) for s in seconds[p]] for p in paths_kept},
            },
            "memory_mb": {
                "traced_peak_memory_path": round(peaks["memory"] / mb, 1),
                "traced_peak_files_path": round(peaks["files"] / mb, 1),
                "one_frame_all_panels": round(frame_bytes / mb, 1),
                "one_scan_of_region_volumes": round(volume_bytes / mb, 1),
                "whole_raw_scan": round(frame_bytes * args.frames / mb, 1),
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
