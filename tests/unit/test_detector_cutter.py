"""The cutter: one read per raw frame, atomic restart-safe cuts, bounded polls."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpitrack.config import load_config
from mpitrack.detector.cutter import Cutter, cut_all
from mpitrack.detector.settings import load_detector_config, make_cutter
from mpitrack.detector.simulate import DetectorSimSpec, simulate_detector
from mpitrack.frames import FrameKey, load_frame
from mpitrack.regions import omega_window

SCANS = 2


def make(out: Path, fmt: str = "hdf5") -> Path:
    simulate_detector(
        DetectorSimSpec(
            out_dir=out, scans=SCANS, panel_size=64, frames_per_scan=24, format=fmt, direct=False
        )
    )
    settle(out)
    return out / "experiment.yaml"


def settle(out: Path) -> None:
    t = time.time() - 60
    for path in (out / "raw").rglob("*"):
        os.utime(path, (t, t))


def cutter_for(config_path: Path, **kw) -> Cutter:
    config = load_config(config_path)
    return make_cutter(config, load_detector_config(config_path.parent / "detector.yaml"), **kw)


def expected_keys(config_path: Path) -> set[FrameKey]:
    config = load_config(config_path)
    n = config.frames.frames_per_scan
    return {
        FrameKey(r.id, f, s)
        for r in config.regions
        for f in omega_window(r.frames[0], r.frames[1], n)
        for s in range(SCANS)
    }


class Counting:
    """A source that counts reads (wraps the real one)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.reads: list[tuple[int, int]] = []

    def ready(self, scan, wanted):
        return self.inner.ready(scan, wanted)

    def read(self, scan, frame):
        self.reads.append((scan, frame))
        return self.inner.read(scan, frame)

    def release(self, scan):
        self.inner.release(scan)

    def recycle(self, scan, frame):
        self.inner.recycle(scan, frame)

    def close(self):
        self.inner.close()


def count_reads(cutter: Cutter) -> Counting:
    """Wrap the cutter's source so that its raw-frame reads are counted."""
    counting = Counting(cutter.source)
    cutter.source = counting
    return counting


def poll_to_the_end(cutter: Cutter) -> set[FrameKey]:
    """Every region frame the cutter reports until it is finished."""
    reported: set[FrameKey] = set()
    while not cutter.finished():
        reported |= set(cutter.poll())
    return reported


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    return make(tmp_path_factory.mktemp("det"))


def test_each_needed_raw_frame_is_read_once_and_cut_for_every_region(tmp_path: Path) -> None:
    config_path = make(tmp_path)
    cutter = cutter_for(config_path, strict=True)
    counting = count_reads(cutter)
    assert cut_all(cutter) == len(expected_keys(config_path))
    needed = {(k.scan, k.frame) for k in expected_keys(config_path)}
    assert sorted(counting.reads) == sorted(needed)  # once each, and only those
    assert cutter.finished()
    written = {
        FrameKey(*map(int, p.stem.split("_")[1::2])) for p in (tmp_path / "cuts").glob("*.npy")
    }
    assert written == expected_keys(config_path)
    # the cut is the sampler applied to the raw frame (panel b stored flipped)
    key = min(written)
    with (
        h5py.File(tmp_path / "raw" / f"left_{key.scan:04d}.h5", "r") as a,
        h5py.File(tmp_path / "raw" / f"right_{key.scan:04d}.h5", "r") as b,
    ):
        panels = [a["/imageseries/images"][key.frame], b["/imageseries/images"][key.frame][:, ::-1]]
    expected = cutter.samplers[key.region].apply(panels)
    got = load_frame(
        tmp_path / "cuts" / f"region_{key.region}_frame_{key.frame}_scan_{key.scan}.npy"
    )
    np.testing.assert_array_equal(got, expected)
    assert not list((tmp_path / "cuts").glob(".*.tmp"))


def test_a_rerun_cuts_only_what_is_missing_and_reports_what_exists(tmp_path: Path) -> None:
    config_path = make(tmp_path)
    first = cutter_for(config_path)
    cut_all(first)
    cuts = tmp_path / "cuts"
    keys = sorted(expected_keys(config_path))
    lost = [keys[0], keys[-1]]
    for k in lost:
        (cuts / f"region_{k.region}_frame_{k.frame}_scan_{k.scan}.npy").unlink()
    kept = cuts / f"region_{keys[5].region}_frame_{keys[5].frame}_scan_{keys[5].scan}.npy"
    inode = kept.stat().st_ino
    again = cutter_for(config_path)
    counting = count_reads(again)
    assert poll_to_the_end(again) == set(keys)
    assert sorted(counting.reads) == sorted({(k.scan, k.frame) for k in lost})
    assert kept.stat().st_ino == inode  # not rewritten


def test_a_tiny_poll_budget_cuts_a_frame_per_poll_and_still_finishes(
    experiment: Path, tmp_path: Path
) -> None:
    cutter = cutter_for(experiment)
    cutter.out_dir = tmp_path / "cuts"
    cutter.poll_budget_s = 1e-9
    polls, seen = 0, set()
    while not cutter.finished() and polls < 1000:
        new = cutter.poll()
        assert len({(k.scan, k.frame) for k in new}) <= 1
        seen |= set(new)
        polls += 1
    assert seen == expected_keys(experiment)


def test_npy_and_hdf5_sources_give_identical_cuts(experiment: Path, tmp_path: Path) -> None:
    npy = make(tmp_path, fmt="npy")
    cut_all(cutter_for(npy))
    for key in sorted(expected_keys(npy))[::7]:
        name = f"region_{key.region}_frame_{key.frame}_scan_{key.scan}.npy"
        ours = load_frame(tmp_path / "cuts" / name)
        theirs_dir = experiment.parent / "cuts"
        if not (theirs_dir / name).exists():
            cut_all(cutter_for(experiment))
        np.testing.assert_array_equal(ours, load_frame(theirs_dir / name))


def test_live_hdf5_being_written_is_never_half_read(tmp_path: Path) -> None:
    """A producer writes the raw files at 60 frames/s while the cutter polls; every cut
    must equal the cut of the finished files."""
    out = tmp_path / "live"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mpitrack.cli.detector",
            "-q",
            "simulate",
            "--out",
            str(out),
            "--scans",
            str(SCANS),
            "--panel-size",
            "64",
            "--frames-per-scan",
            "24",
            "--fps",
            "60",
            "--no-direct",
        ]
    )
    try:
        deadline = time.monotonic() + 60
        # The config files are written atomically: once there, they are whole.
        while not all((out / name).exists() for name in ("detector.yaml", "experiment.yaml")):
            assert time.monotonic() < deadline and writer.poll() is None
            time.sleep(0.02)
        cutter = cutter_for(out / "experiment.yaml")
        cutter.source.settle_s = 0.0  # the HDF5 lock alone must keep open files out
        live: dict[FrameKey, np.ndarray] = {}
        while not cutter.finished():
            assert time.monotonic() < deadline, "the cutter did not finish"
            for key in cutter.poll():
                name = f"region_{key.region}_frame_{key.frame}_scan_{key.scan}.npy"
                live[key] = load_frame(out / "cuts" / name)
            time.sleep(0.02)
        assert writer.wait(timeout=60) == 0
    finally:
        writer.kill()
    assert set(live) == expected_keys(out / "experiment.yaml")
    again = tmp_path / "again"
    again.mkdir()
    batch = cutter_for(out / "experiment.yaml")
    batch.out_dir = again
    batch.source.settle_s = 0.0  # the writer has exited
    cut_all(batch)
    for key, value in live.items():
        name = f"region_{key.region}_frame_{key.frame}_scan_{key.scan}.npy"
        np.testing.assert_array_equal(value, load_frame(again / name))
