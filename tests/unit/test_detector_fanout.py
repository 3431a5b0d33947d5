"""In-memory fan-out: cuts gathered into (region, scan) volumes, the memory bound, what
the run still needs, and the worker's check of a volume that came with its job."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from test_detector_cutter import (
    SCANS,
    count_reads,
    cutter_for,
    expected_keys,
    make,
    poll_to_the_end,
)

from mpitrack.config import load_config
from mpitrack.detector.cutter import cut_all
from mpitrack.detector.fanout import VolumeBuffer, received_volume
from mpitrack.detector.settings import load_detector_config
from mpitrack.frames import FrameError, FrameMask, FramePattern, load_volume
from mpitrack.regions import omega_window
from mpitrack.stats.report import options_from_config


def windows_of(config_path: Path) -> dict[int, tuple[int, ...]]:
    config = load_config(config_path)
    n = config.frames.frames_per_scan
    return {r.id: omega_window(r.frames[0], r.frames[1], n) for r in config.regions}


# ----------------------------------------------------------------------------- the buffer


def test_cuts_land_in_window_order_and_the_volume_is_whole_only_with_its_last_frame() -> None:
    buffer = VolumeBuffer({7: (22, 23, 0, 1)}, {7: (2, 3)})  # a window that wraps
    order = [1, 22, 0, 23]
    for i, frame in enumerate(order):
        whole = buffer.put(7, frame, 5, np.full((2, 3), frame, np.float32))
        assert whole == (i == len(order) - 1)
    volume = buffer.take(7, 5)
    assert volume.dtype == np.float32 and volume.shape == (4, 2, 3)
    assert [int(v[0, 0]) for v in volume] == [22, 23, 0, 1]
    assert buffer.nbytes == 0 and buffer.oldest_scan() is None


def test_an_incomplete_or_absent_volume_is_never_handed_out() -> None:
    buffer = VolumeBuffer({1: (0, 1)}, {1: (2, 2)})
    with pytest.raises(LookupError, match=r"region 1 scan 0.*absent"):
        buffer.take(1, 0)
    buffer.put(1, 0, 0, np.zeros((2, 2), np.float32))
    with pytest.raises(LookupError, match=r"missing frames \[1\]"):
        buffer.take(1, 0)
    with pytest.raises(ValueError, match="region 1 frame 1 scan 0: cut of shape"):
        buffer.put(1, 1, 0, np.zeros((3, 2), np.float32))


def test_the_memory_bound_counts_scans_held_until_every_volume_of_the_oldest_is_taken() -> None:
    buffer = VolumeBuffer({1: (0,), 2: (0,)}, {1: (2, 2), 2: (4, 4)}, memory_scans=2)
    assert buffer.scan_bytes == (4 + 16) * 4
    assert buffer.may_start(0) and buffer.may_start(100)  # nothing held
    for region in (1, 2):
        buffer.put(region, 0, 3, np.zeros(buffer.shapes[region], np.float32))
    assert buffer.may_start(4) and not buffer.may_start(5)
    buffer.take(1, 3)
    assert not buffer.may_start(5), "scan 3 still holds region 2's volume"
    buffer.take(2, 3)
    assert buffer.may_start(5)


def test_volumes_the_run_no_longer_needs_are_dropped() -> None:
    buffer = VolumeBuffer({1: (0,), 2: (0,)}, {1: (2, 2), 2: (2, 2)})
    for region in (1, 2):
        buffer.put(region, 0, 0, np.zeros((2, 2), np.float32))
    assert buffer.drop_unneeded(lambda region, scan: region != 2) == 1
    buffer.take(1, 0)
    with pytest.raises(LookupError):
        buffer.take(2, 0)


# ----------------------------------------------------------------------------- the cutter


def test_in_memory_cuts_equal_the_cut_files_and_no_file_is_written(tmp_path: Path) -> None:
    files = make(tmp_path / "files")
    cut_all(cutter_for(files))
    memory = make(tmp_path / "memory")
    cutter = cutter_for(memory, in_memory=True)
    counting = count_reads(cutter)
    reported = poll_to_the_end(cutter)
    assert reported == expected_keys(memory)
    assert sorted(counting.reads) == sorted({(k.scan, k.frame) for k in reported})  # once each
    assert not list((tmp_path / "memory" / "cuts").rglob("*.npy"))
    config = load_config(files)
    pattern = FramePattern(config.frames.pattern)
    for region, window in windows_of(files).items():
        for scan in range(SCANS):
            expected = load_volume(config.frames.directory, pattern, region, scan, window)
            np.testing.assert_array_equal(cutter.take(region, scan), expected)
    assert cutter.buffer is not None and cutter.buffer.nbytes == 0


def test_no_frame_of_a_scan_past_the_memory_bound_is_read_until_older_volumes_go(
    tmp_path: Path,
) -> None:
    config_path = make(tmp_path)
    cutter = cutter_for(config_path, in_memory=True)
    assert cutter.buffer is not None
    cutter.buffer.memory_scans = 1
    counting = count_reads(cutter)
    first = set(cutter.poll()) | set(cutter.poll())
    assert {k.scan for k in first} == {0}
    assert {scan for scan, _ in counting.reads} == {0}, "read a frame of scan 1 while 0 is held"
    held = cutter.buffer.nbytes
    assert held <= cutter.buffer.scan_bytes
    regions = windows_of(config_path)
    for region in list(regions)[:-1]:
        cutter.take(region, 0)
    assert not any(k.scan == 1 for k in cutter.poll()), "scan 0 still holds a volume"
    cutter.take(list(regions)[-1], 0)
    assert {k.scan for k in cutter.poll()} == {1}


def test_only_what_the_run_still_needs_is_read_and_cut(tmp_path: Path) -> None:
    """A resumed run: region 0 committed scan 0 already, the others did not; scan 0's
    frames only region 0's window holds are not read."""
    config_path = make(tmp_path)
    windows = windows_of(config_path)
    cutter = cutter_for(config_path, in_memory=True)
    cutter.needed = lambda region, scan: region != 0 or scan >= 1
    counting = count_reads(cutter)
    wanted = {k for k in expected_keys(config_path) if k.region != 0 or k.scan >= 1}
    assert poll_to_the_end(cutter) == wanted
    others = {f for r, w in windows.items() if r != 0 for f in w}
    assert {f for s, f in counting.reads if s == 0} == others


def test_scans_every_region_committed_are_skipped(tmp_path: Path) -> None:
    config_path = make(tmp_path)
    cutter = cutter_for(config_path, in_memory=True)
    cutter.needed = lambda region, scan: scan >= 1
    cutter.skip_through(0)
    counting = count_reads(cutter)
    poll_to_the_end(cutter)
    assert {scan for scan, _ in counting.reads} == {1}


# ----------------------------------------------------------------------------- the worker


def test_a_received_volume_is_masked_and_checked_as_the_same_cuts_from_files(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    volume = rng.normal(100, 5, (3, 4, 5)).astype(np.float32)
    volume[0, 1, 1] = 4294967295.0  # a marker value
    volume[2, 0, 0] = np.nan
    pixels = np.zeros((4, 5), bool)
    pixels[3, 4] = True
    mask = FrameMask((4294967295.0,), pixels)
    window = (10, 11, 12)
    pattern = FramePattern("region_{region}_frame_{frame}_scan_{scan}.npy")
    for frame, cut in zip(window, volume, strict=True):
        np.save(tmp_path / pattern.format(2, frame, 9), cut)
    from_files = load_volume(tmp_path, pattern, 2, 9, window, (4, 5), mask)
    got = received_volume(volume, 2, 9, window, mask, (4, 5))
    np.testing.assert_array_equal(got, from_files)
    assert np.isnan(got[0, 1, 1]) and np.isnan(got[1, 3, 4]) and np.isnan(got[2, 0, 0])


def test_a_bad_received_volume_fails_naming_region_frame_and_scan() -> None:
    window = (4, 5)
    with pytest.raises(FrameError, match=r"region 2 frame 4 scan 9.*every pixel"):
        received_volume(np.full((2, 3, 3), np.nan, np.float32), 2, 9, window, FrameMask())
    bad = np.zeros((2, 3, 3), np.float32)
    bad[1, 0, 0] = np.inf
    with pytest.raises(FrameError, match=r"region 2 frame 5 scan 9.*1 infinite"):
        received_volume(bad, 2, 9, window, FrameMask())
    with pytest.raises(FrameError, match="differs from expected"):
        received_volume(np.zeros((2, 3, 3), np.float32), 2, 9, window, FrameMask(), (3, 4))
    with pytest.raises(FrameError, match="window of 2 frames"):
        received_volume(np.zeros((3, 3, 3), np.float32), 2, 9, window, FrameMask())


def test_the_report_draws_spot_pages_only_when_region_frames_are_on_disk(tmp_path: Path) -> None:
    config_path = make(tmp_path)
    config = load_config(config_path)
    detector = load_detector_config(config_path.parent / "detector.yaml")
    assert not detector.cut_files, "in memory is the default"
    in_memory = dataclasses.replace(config, detector=detector)
    assert options_from_config(in_memory).spots is None
    files = dataclasses.replace(config, detector=dataclasses.replace(detector, cut_files=True))
    assert options_from_config(files).spots is not None


def test_a_frame_buffer_is_reused_only_after_the_cutter_gave_its_frame_back(
    tmp_path: Path,
) -> None:
    config_path = make(tmp_path)
    cutter = cutter_for(config_path)
    source = cutter.source
    assert source.ready(0, {0, 1, 2}) == {0, 1, 2}
    first = source.read(0, 0)
    kept = [p.copy() for p in first]
    second = source.read(0, 1)  # as the reader thread prefetches while 0 is cut
    assert not any(np.shares_memory(a, b) for a in first for b in second)
    source.recycle(0, 0)
    third = source.read(0, 2)
    assert any(np.shares_memory(a, b) for a in first for b in third), "no buffer was reused"
    assert not any(np.shares_memory(a, b) for a in second for b in third)
    again = source.read(0, 0)
    assert not np.array_equal(again[0], third[0])
    for got, want in zip(again, kept, strict=True):
        np.testing.assert_array_equal(got, want)
    source.close()
