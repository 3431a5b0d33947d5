"""Cost of DirectoryScanner.poll(): flat directory vs per-scan subdirectories.

For each total file count, builds the frame directory in both layouts under a
temporary directory in /tmp, then measures (median of several runs):

- first_poll_s: a fresh scanner's first poll (every file is new);
- busy_poll_s: a steady-state poll after 100 new frames were written into the
  current scan (flat: the one directory; per-scan: the newest scan directory);
- idle_poll_s: a poll when nothing changed;
- naive_full_parse_s: listing everything and parsing every name, i.e. a scanner
  that remembers nothing (the baseline the incremental design avoids).

Older scan directories are back-dated so that they count as settled, as they
would be in a long run. Prints one JSON document. Usage:
    python benchmarks/dir_poll.py [--sizes 1000,10000,50000,200000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from mpitrack.frames import DirectoryScanner, FramePattern

FLAT = "region_{region}_frame_{frame}_scan_{scan}.npy"
PER_SCAN = "scan_{scan}/region_{region}_frame_{frame}_scan_{scan}.npy"
REGIONS = 10
FRAMES_PER_SCAN = 100  # 10 regions x 100 frames = 1000 files per scan


def write(path: Path) -> None:
    with open(path, "wb") as fh:
        fh.write(b"x")


class Builder:
    """Grows one frame directory scan by scan; files are hard links to one
    1-byte file (one syscall each), so building 200,000 frames stays quick."""

    def __init__(self, root: Path, pattern: FramePattern) -> None:
        self.root, self.pattern = root, pattern
        self.links = 0
        self.count = 0
        self.extra = 0
        self.dirs: set[Path] = {root}

    def link(self, path: Path) -> None:
        if self.links % 60_000 == 0:  # ext4 allows 65,000 links per inode
            self.source = self.root.parent / f".{self.root.name}-source-{self.links}"
            write(self.source)
        os.link(self.source, path)
        self.links += 1

    def grow_to(self, n_files: int) -> int:
        """Add frames up to n_files; returns the last scan number."""
        for i in range(self.count, n_files):
            scan, rest = divmod(i, REGIONS * FRAMES_PER_SCAN)
            region, frame = divmod(rest, FRAMES_PER_SCAN)
            path = self.root / self.pattern.format(region=region, frame=frame, scan=scan)
            if path.parent not in self.dirs:
                path.parent.mkdir(parents=True, exist_ok=True)
                self.dirs.add(path.parent)
            self.link(path)
        self.count = max(self.count, n_files)
        old = time.time() - 3600
        for d in self.dirs:
            os.utime(d, (old, old))
        return (self.count - 1) // (REGIONS * FRAMES_PER_SCAN)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(builder: Builder, n_files: int, repeats: int) -> dict:
    root, pattern = builder.root, builder.pattern
    pattern_text = pattern.pattern
    last_scan = builder.grow_to(n_files)
    first = []
    for _ in range(max(1, repeats // 2)):
        scanner = DirectoryScanner(root, pattern)
        t = timed(scanner.poll)
        first.append(t)
    busy, idle = [], []
    current_dir = (root / pattern.format(region=0, frame=0, scan=last_scan)).parent
    for _ in range(repeats):
        for _ in range(100):
            builder.extra += 1  # frames of a region beyond REGIONS: names never clash
            name = pattern.format(region=REGIONS + 1, frame=builder.extra, scan=last_scan)
            builder.link(current_dir / Path(name).name)
        found: list = []
        busy.append(timed(lambda s=scanner, f=found: f.extend(s.poll())))
        assert len(found) == 100, len(found)
    # Let the racy window pass logically: back-date the current directory.
    old = time.time() - 3600
    os.utime(current_dir, (old, old))
    scanner.poll()
    for _ in range(repeats):
        idle.append(timed(scanner.poll))
    dirs = [""] if "/" not in pattern_text else [p.name + "/" for p in root.iterdir()]
    naive = []
    for _ in range(max(1, repeats // 2)):
        naive.append(
            timed(lambda: [pattern.parse(d + n) for d in dirs for n in os.listdir(root / d)])
        )
    return {
        "files": builder.count + builder.extra,
        "directories": 1 if "/" not in pattern_text else last_scan + 1,
        "first_poll_s": round(statistics.median(first), 5),
        "busy_poll_100_new_s": round(statistics.median(busy), 5),
        "idle_poll_s": round(statistics.median(idle), 6),
        "naive_full_parse_s": round(statistics.median(naive), 5),
    }


def filesystem(path: Path) -> str:
    try:
        out = subprocess.run(
            ["df", "-T", str(path)], capture_output=True, text=True, check=True
        ).stdout
        return out.splitlines()[1].split()[1]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000,200000")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    base = Path(tempfile.mkdtemp(prefix="mpitrack-dirpoll-", dir="/tmp"))
    results = []
    try:
        for layout, pattern in (("flat", FLAT), ("per_scan", PER_SCAN)):
            root = base / layout
            root.mkdir()
            builder = Builder(root, FramePattern(pattern))
            for n in sizes:
                row = measure(builder, n, args.repeats)
                results.append({"layout": layout, **row})
            shutil.rmtree(root)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(
        json.dumps(
            {
                "benchmark": "dir_poll",
                "python": platform.python_version(),
                "filesystem": filesystem(Path("/tmp")),
                "files_per_scan_directory": REGIONS * FRAMES_PER_SCAN,
                "repeats": args.repeats,
                "statistic": "median",
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
