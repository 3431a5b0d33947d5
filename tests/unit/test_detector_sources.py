"""Raw frame sources: complete files only (never half-read), clear errors for missing panels."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpitrack.detector import DetectorError
from mpitrack.detector.instrument import Instrument, PanelSpec
from mpitrack.detector.sources import Hdf5Stacks, NpyFrames

FRAMES = 6


def instrument(shared: bool = False) -> Instrument:
    common = dict(rows=8, cols=10, pixel_size=(0.1, 0.1), distance=100.0, beam_center=(4, 5))
    return Instrument(
        panels=(
            PanelSpec(name="a", **common),  # type: ignore[arg-type]
            PanelSpec(name="b", flip="ud", offset=(8, 0) if shared else (0, 0), **common),  # type: ignore[arg-type]
        ),
        frames_per_scan=FRAMES,
    )


def stack(seed: int, rows: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1000, (FRAMES, rows, 10)).astype(np.uint16)


def write_h5(path: Path, data: np.ndarray, dataset: str = "/imageseries/images", **kw) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset(dataset, data=data, chunks=(1, *data.shape[1:]), **kw)


def old(path: Path) -> None:
    """Make a file look settled (mtime a minute ago)."""
    t = time.time() - 60
    os.utime(path, (t, t))


def test_complete_files_are_read_frame_by_frame_with_flips(tmp_path: Path) -> None:
    a, b = stack(1), stack(2)
    write_h5(tmp_path / "a_0003.h5", a)
    write_h5(tmp_path / "b_0003.h5", b)
    source = Hdf5Stacks(
        instrument(), tmp_path, "{panel}_{scan:04d}.h5", "/imageseries/images", settle_s=0.5
    )
    assert source.ready(3, {0, 1}) == set()  # just written: not settled yet
    old(tmp_path / "a_0003.h5")
    old(tmp_path / "b_0003.h5")
    assert source.ready(3, {0, 5, 9}) == {0, 5}  # frame 9 is beyond the stack
    images = source.read(3, 5)
    np.testing.assert_array_equal(images[0], a[5])
    np.testing.assert_array_equal(images[1], b[5][::-1])
    source.release(3)
    source.close()


def test_panels_sharing_one_stored_image_are_cut_by_offset(tmp_path: Path) -> None:
    both = stack(3, rows=16)
    write_h5(tmp_path / "s1.h5", both, dataset="/entry/data/data")
    old(tmp_path / "s1.h5")
    source = Hdf5Stacks(
        instrument(shared=True), tmp_path, "s{scan}.h5", "/entry/data/data", settle_s=0
    )
    assert source.ready(1, {2}) == {2}
    a, b = source.read(1, 2)
    np.testing.assert_array_equal(a, both[2, :8])
    np.testing.assert_array_equal(b, both[2, 8:][::-1])
    source.close()


WRITER = """
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "w")
d = f.create_dataset("/imageseries/images", (6, 8, 10), "u2", chunks=(1, 8, 10))
d[0] = 7
f.flush()
print("open", flush=True)
sys.stdin.readline()
d[1:] = 9
f.close()
"""


def test_a_file_still_open_for_writing_is_waited_for_not_half_read(tmp_path: Path) -> None:
    write_h5(tmp_path / "b_0000.h5", stack(4))
    old(tmp_path / "b_0000.h5")
    path = tmp_path / "a_0000.h5"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        old(path)  # settled by mtime: only the writer's lock keeps it out
        source = Hdf5Stacks(
            instrument(), tmp_path, "{panel}_{scan:04d}.h5", "/imageseries/images", settle_s=0
        )
        assert source.ready(0, set(range(FRAMES))) == set()
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.wait(timeout=30) == 0
    finally:
        writer.kill()
    assert source.ready(0, set(range(FRAMES))) == set(range(FRAMES))
    assert source.read(0, 3)[0].max() == 9
    source.close()


def test_a_truncated_file_is_never_read_and_is_named_once(tmp_path: Path, caplog) -> None:
    write_h5(tmp_path / "a_0000.h5", stack(5))
    write_h5(tmp_path / "b_0000.h5", stack(6))
    size = (tmp_path / "a_0000.h5").stat().st_size
    with open(tmp_path / "a_0000.h5", "r+b") as fp:
        fp.truncate(size // 2)
    old(tmp_path / "a_0000.h5")
    old(tmp_path / "b_0000.h5")
    source = Hdf5Stacks(
        instrument(), tmp_path, "{panel}_{scan:04d}.h5", "/imageseries/images", settle_s=0
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert source.ready(0, {0, 1}) == set()
    warnings = [r.getMessage() for r in caplog.records if "a_0000.h5" in r.getMessage()]
    assert len(warnings) == 1 and "not readable yet" in warnings[0]
    source.close()


def test_marker_mode_waits_for_the_done_file(tmp_path: Path) -> None:
    write_h5(tmp_path / "a_0000.h5", stack(1))
    write_h5(tmp_path / "b_0000.h5", stack(2))
    source = Hdf5Stacks(
        instrument(), tmp_path, "{panel}_{scan:04d}.h5", "/imageseries/images", ready="marker"
    )
    assert source.ready(0, {0}) == set()
    (tmp_path / "a_0000.h5.done").touch()
    (tmp_path / "b_0000.h5.done").touch()
    assert source.ready(0, {0}) == {0}  # no settling needed
    source.close()


def test_a_missing_panel_names_the_missing_file(tmp_path: Path, caplog) -> None:
    write_h5(tmp_path / "a_0002.h5", stack(1))
    old(tmp_path / "a_0002.h5")
    strict = Hdf5Stacks(
        instrument(),
        tmp_path,
        "{panel}_{scan:04d}.h5",
        "/imageseries/images",
        settle_s=0,
        strict=True,
    )
    with pytest.raises(
        DetectorError,
        match=r"scan 2: panel b: file .*b_0002\.h5 is missing while .*a_0002\.h5 is complete",
    ):
        strict.ready(2, {0})
    lenient = Hdf5Stacks(
        instrument(), tmp_path, "{panel}_{scan:04d}.h5", "/imageseries/images", settle_s=0
    )
    with caplog.at_level(logging.WARNING):
        assert lenient.ready(2, {0}) == set()
    assert any("b_0002.h5 is missing" in r.getMessage() for r in caplog.records)
    strict.close()
    lenient.close()


def test_a_wrong_dataset_path_names_the_file_and_what_it_holds(tmp_path: Path) -> None:
    write_h5(tmp_path / "a_0000.h5", stack(1), dataset="/entry/data/data")
    old(tmp_path / "a_0000.h5")
    source = Hdf5Stacks(
        instrument(), tmp_path, "{panel}_{scan:04d}.h5", "/imageseries/images", settle_s=0
    )
    with pytest.raises(
        DetectorError, match=r"a_0000\.h5: no dataset '/imageseries/images'.*/entry/data/data"
    ):
        source.ready(0, {0})
    source.close()


def write_compressed(directory: Path) -> tuple[np.ndarray, np.ndarray]:
    """Both panels' stacks of scan 0, bitshuffle/LZ4 compressed as an Eiger writes them."""
    import hdf5plugin  # the `detector` extra, which scripts/test installs

    a, b = stack(1), stack(2)
    write_h5(directory / "a_0000.h5", a, **hdf5plugin.Bitshuffle(cname="lz4"))
    write_h5(directory / "b_0000.h5", b, **hdf5plugin.Bitshuffle(cname="lz4"))
    old(directory / "a_0000.h5")
    old(directory / "b_0000.h5")
    return a, b


def test_compressed_datasets_read_through_hdf5plugin(tmp_path: Path) -> None:
    a, _ = write_compressed(tmp_path)
    source = Hdf5Stacks(
        instrument(), tmp_path, "{panel}_{scan:04d}.h5", "/imageseries/images", settle_s=0
    )
    assert source.ready(0, {1}) == {1}
    np.testing.assert_array_equal(source.read(0, 1)[0], a[1])
    source.close()


def test_compressed_datasets_without_hdf5plugin_fail_with_what_to_install(tmp_path: Path) -> None:
    """In a process where hdf5plugin cannot be imported, reading a compressed frame
    names the file, the filter and the package to install."""
    write_compressed(tmp_path)
    script = f"""
import sys
sys.modules["hdf5plugin"] = None  # as if it were not installed
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_detector_sources import instrument
from mpitrack.detector import RawFrameError
from mpitrack.detector.sources import Hdf5Stacks
source = Hdf5Stacks(
    instrument(), {str(tmp_path)!r}, "{{panel}}_{{scan:04d}}.h5", "/imageseries/images",
    settle_s=0,
)
assert source.ready(0, {{1}}) == {{1}}
try:
    source.read(0, 1)
except RawFrameError as exc:
    print(exc)
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HDF5_PLUGIN_PATH": str(tmp_path / "no-plugins")},
    )
    assert done.returncode == 0, done.stderr
    message = done.stdout.strip()
    assert str(tmp_path / "a_0000.h5") in message, message
    assert "cannot read frame 1 of /imageseries/images" in message, message
    assert "HDF5 filter 32008" in message, message  # bitshuffle's registered id
    assert "pip install 'mpitrack[detector]'" in message, message


def test_npy_frames_wait_for_every_byte(tmp_path: Path) -> None:
    a = np.arange(80, dtype=np.uint16).reshape(8, 10)
    (tmp_path / "s0").mkdir()
    np.save(tmp_path / "s0" / "a_1.npy", a)
    full = (tmp_path / "s0" / "a_1.npy").read_bytes()
    (tmp_path / "s0" / "b_1.npy").write_bytes(full[:-7])  # being written in place
    source = NpyFrames(instrument(), tmp_path, "s{scan}/{panel}_{frame}.npy")
    assert source.ready(0, {1}) == set()
    (tmp_path / "s0" / "b_1.npy").write_bytes(full)
    assert source.ready(0, {1, 2}) == {1}
    images = source.read(0, 1)
    np.testing.assert_array_equal(images[1], a[::-1])
    strict = NpyFrames(instrument(), tmp_path, "s{scan}/{panel}_{frame}.npy", strict=True)
    np.save(tmp_path / "s0" / "a_2.npy", a)
    with pytest.raises(DetectorError, match=r"scan 0 frame 2: file .*b_2\.npy is missing"):
        strict.ready(0, {2})


def test_templates_are_checked() -> None:
    with pytest.raises(ValueError, match=r"lacks \{scan\}"):
        Hdf5Stacks(instrument(), ".", "{panel}.h5", "/d")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \{frame\}"):
        Hdf5Stacks(instrument(), ".", "{scan}_{frame}.h5", "/d")
    with pytest.raises(ValueError, match=r"lacks \{frame\}"):
        NpyFrames(instrument(), ".", "{scan}.npy")
