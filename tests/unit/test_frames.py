"""Frame names, validated loading, volume assembly and the incremental directory scan."""

import logging
import os
import threading
import time

import numpy as np
import pytest

from mpitrack.frames import (
    DirectoryScanner,
    FrameError,
    FrameKey,
    FrameMask,
    FrameMasks,
    FramePattern,
    load_frame,
    load_volume,
    read_settled,
    refuse_outside_links,
)

DEFAULT = "region_{region}_frame_{frame}_scan_{scan}.npy"
PER_SCAN = "scan_{scan}/region_{region}_frame_{frame}_scan_{scan}.npy"


# ----------------------------------------------------------------------------- patterns


def test_default_pattern_round_trips():
    p = FramePattern(DEFAULT)
    name = p.format(region=3, frame=1439, scan=12)
    assert name == "region_3_frame_1439_scan_12.npy"
    assert p.parse(name) == FrameKey(region=3, frame=1439, scan=12)


def test_format_spec_padding_and_subdirectory():
    p = FramePattern("scan_{scan:03d}/r{region}_f{frame:05d}.s{scan}.npy")
    assert p.format(region=1, frame=2, scan=3) == "scan_003/r1_f00002.s3.npy"
    assert p.parse("scan_003/r1_f00002.s3.npy") == (1, 2, 3)


def test_repeated_field_must_agree():
    p = FramePattern(PER_SCAN)
    assert p.parse("scan_4/region_1_frame_2_scan_4.npy") == (1, 2, 4)
    assert p.parse("scan_5/region_1_frame_2_scan_4.npy") is None


@pytest.mark.parametrize(
    "name",
    [
        ".region_1_frame_2_scan_3.npy",
        "region_1_frame_2_scan_3.npy.tmp",
        "region_1_frame_2_scan_3.npy~",
        "region_x_frame_2_scan_3.npy",
        "region_1_frame_2_scan_3.npz",
        "sub/region_1_frame_2_scan_3.npy",
    ],
)
def test_non_matching_and_temporary_names_parse_to_none(name):
    assert FramePattern(DEFAULT).parse(name) is None


def test_dot_and_tmp_names_never_match_even_if_the_regex_would():
    p = FramePattern(r"re:.*?(?P<region>\d+)_(?P<frame>\d+)_(?P<scan>\d+).*")
    assert p.parse("a1_2_3.npy") == (1, 2, 3)
    assert p.parse(".a1_2_3.npy") is None
    assert p.parse("a1_2_3.npy.tmp") is None
    assert p.parse(".hidden/a1_2_3.npy") is None


def test_regex_pattern_parses_and_literal_regex_formats():
    p = FramePattern(r"re:r(?P<region>\d+)_f(?P<frame>\d{5})_s(?P<scan>\d+)\.npy")
    assert p.parse("r7_f00042_s2.npy") == (7, 42, 2)
    assert p.parse("r7_f42_s2.npy") is None
    assert p.format(region=7, frame=42, scan=2) == "r7_f00042_s2.npy"


def test_general_regex_cannot_format():
    p = FramePattern(r"re:(?:a|b)(?P<region>\d+)_(?P<frame>\d+)_(?P<scan>\d+)\.npy")
    assert p.parse("b1_2_3.npy") == (1, 2, 3)
    with pytest.raises(ValueError, match="general regex"):
        p.format(region=1, frame=2, scan=3)


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        ("region_{region}_frame_{frame}.npy", "{scan}"),
        ("{frame}_{scan}", "{region}"),
        ("{region}_{frame}_{scan}_{extra}", "{extra}"),
        (r"re:(?P<region>\d+)_(?P<frame>\d+)", "(?P<scan>...)"),
        ("{region}_{frame:x}_{scan}", "format spec"),
        ("{region!r}_{frame}_{scan}", "conversion"),
        ("re:(?P<region>", "does not compile"),
    ],
)
def test_invalid_patterns_name_the_problem(pattern, named):
    with pytest.raises(ValueError) as info:
        FramePattern(pattern)
    assert named in str(info.value)


# ----------------------------------------------------------------------------- loading


def save(path, array):
    np.save(path, array)
    return path


def test_valid_float_frame_loads_unchanged(tmp_path):
    data = np.arange(12, dtype=np.float64).reshape(3, 4) / 7
    out = load_frame(save(tmp_path / "f.npy", data), expected_shape=(3, 4))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, data)


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (np.uint16, np.float32),
        (np.int8, np.float32),
        (np.int64, np.float64),
        (np.float16, np.float32),
        (np.float32, np.float32),
    ],
)
def test_numeric_dtypes_are_converted_to_float(tmp_path, dtype, expected):
    data = np.arange(6).reshape(2, 3).astype(dtype)
    out = load_frame(save(tmp_path / "f.npy", data))
    assert out.dtype == expected
    np.testing.assert_array_equal(out, data.astype(np.float64))


def test_big_endian_and_fortran_order_are_accepted(tmp_path):
    data = np.asfortranarray(np.arange(6, dtype=">f8").reshape(2, 3))
    out = load_frame(save(tmp_path / "f.npy", data))
    assert out.dtype == np.float64 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.arange(6).reshape(2, 3))


def expect_frame_error(path, match, **kwargs):
    with pytest.raises(FrameError) as info:
        load_frame(path, **kwargs)
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert match in err.reason, err.reason
    return err


def test_truncated_file_is_rejected(tmp_path):
    path = save(tmp_path / "f.npy", np.ones((35, 35)))
    path.write_bytes(path.read_bytes()[:-100])
    expect_frame_error(path, "truncated")


def test_file_cut_inside_header_is_rejected(tmp_path):
    path = save(tmp_path / "f.npy", np.ones((35, 35)))
    path.write_bytes(path.read_bytes()[:20])
    expect_frame_error(path, "header")


def test_random_bytes_are_rejected(tmp_path):
    path = tmp_path / "f.npy"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    expect_frame_error(path, "not a .npy file")


def test_corrupt_header_is_rejected(tmp_path):
    path = save(tmp_path / "f.npy", np.ones((4, 4)))
    raw = bytearray(path.read_bytes())
    raw[10:20] = b"@@garbage@"
    path.write_bytes(bytes(raw))
    expect_frame_error(path, "header")


def test_empty_file_is_rejected(tmp_path):
    path = tmp_path / "f.npy"
    path.write_bytes(b"")
    expect_frame_error(path, "not a .npy file")


class _Booby:
    """Unpickling this creates a directory: proof that a load unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickled_object_array_is_refused_without_unpickling(tmp_path):
    marker = tmp_path / "unpickled"
    data = np.array([[_Booby(str(marker)), 1]], dtype=object)
    path = tmp_path / "f.npy"
    np.save(path, data, allow_pickle=True)
    expect_frame_error(path, "object dtype")
    assert not marker.exists()


def test_npz_archive_is_rejected(tmp_path):
    path = tmp_path / "f.npy"
    with open(path, "wb") as fh:
        np.savez(fh, a=np.ones((2, 2)))
    expect_frame_error(path, "not a .npy file")


def test_three_dimensional_array_is_rejected(tmp_path):
    expect_frame_error(save(tmp_path / "f.npy", np.ones((2, 3, 4))), "2D")


def test_one_dimensional_array_is_rejected(tmp_path):
    expect_frame_error(save(tmp_path / "f.npy", np.ones(5)), "2D")


def test_wrong_shape_is_rejected(tmp_path):
    err = expect_frame_error(
        save(tmp_path / "f.npy", np.ones((35, 34))), "shape", expected_shape=(35, 35)
    )
    assert "(35, 34)" in err.reason and "(35, 35)" in err.reason


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_values_are_rejected_and_counted(tmp_path, bad):
    data = np.ones((4, 4))
    data[1, 2] = bad
    data[3, 0] = bad
    err = expect_frame_error(save(tmp_path / "f.npy", data), "infinite")
    assert err.reason.startswith("2 ")


def test_float16_overflow_to_inf_is_rejected(tmp_path):
    data = np.array([[1.0, np.inf]], dtype=np.float16)
    expect_frame_error(save(tmp_path / "f.npy", data), "1 infinite")


def test_nan_pixels_are_masked_not_refused(tmp_path):
    data = np.ones((4, 4))
    data[1, 2] = np.nan
    out = load_frame(save(tmp_path / "f.npy", data))
    assert np.isnan(out[1, 2]) and np.isfinite(np.delete(out.ravel(), 6)).all()


@pytest.mark.parametrize(
    ("dtype", "marker", "masked"),
    [
        (np.uint32, 2**32 - 1, True),  # the Eiger/Dectris dead-pixel marker
        (np.float32, 2**32 - 1, True),  # the same marker written into float32 frames
        (np.int32, -1, True),  # gaps written as -1
        (np.float64, -1, True),
        (np.uint16, -1, False),  # -1 cannot be in unsigned data: nothing matches
        (np.uint16, 2**32 - 1, False),  # nor 2^32-1 in 16-bit data (65535 is a real count)
    ],
)
def test_marker_values_are_masked_in_the_files_own_dtype(tmp_path, dtype, marker, masked):
    data = np.full((3, 4), 7, dtype=dtype)
    if masked:
        data[0, 1] = marker
    mask = FrameMask(values=(float(marker),))
    out = load_frame(save(tmp_path / "f.npy", data), mask=mask)
    assert np.isnan(out[0, 1]) == masked
    assert np.count_nonzero(np.isnan(out)) == int(masked)
    assert np.all(out[1:] == 7)


def test_mask_file_masks_its_pixels_per_region(tmp_path):
    mask_file = tmp_path / "mask_3.npy"
    pixels = np.zeros((3, 4), dtype=np.uint8)
    pixels[2, 3] = 1
    np.save(mask_file, pixels)
    masks = FrameMasks(values=(), file=tmp_path / "mask_{region}.npy")
    p = write_frames(tmp_path, DEFAULT, region=3, scan=0, frames=[0, 1])
    vol = load_volume(tmp_path, p, region=3, scan=0, window=[0, 1], mask=masks.for_region(3))
    assert np.isnan(vol[:, 2, 3]).all() and np.count_nonzero(np.isnan(vol)) == 2
    with pytest.raises(FrameError) as info:
        masks.for_region(4)  # no mask_4.npy
    assert info.value.path.endswith("mask_4.npy")


def test_an_infinite_value_under_a_masked_pixel_is_no_error_in_a_volume_or_a_frame(tmp_path):
    """A mask-file pixel holds no measurement, whatever the detector wrote there: the
    volume loader agrees with load_frame (and with volumes cut in memory)."""
    np.save(tmp_path / "mask.npy", np.eye(3, 4, dtype=np.uint8))
    mask = FrameMasks(file=tmp_path / "mask.npy").for_region(0)
    p = write_frames(tmp_path, DEFAULT, region=0, scan=0, frames=[0, 1])
    path = tmp_path / p.format(region=0, frame=1, scan=0)
    frame = np.load(path)
    frame[1, 1] = np.inf  # under the mask
    np.save(path, frame)
    vol = load_volume(tmp_path, p, region=0, scan=0, window=[0, 1], mask=mask)
    np.testing.assert_array_equal(vol[1], load_frame(path, mask=mask))
    assert np.isnan(vol[1, 1, 1]) and np.count_nonzero(np.isnan(vol)) == 6
    frame[0, 1] = np.inf  # not under it
    np.save(path, frame)
    with pytest.raises(FrameError, match="infinite"):
        load_volume(tmp_path, p, region=0, scan=0, window=[0, 1], mask=mask)


def test_mask_file_of_another_shape_names_the_frame(tmp_path):
    np.save(tmp_path / "mask.npy", np.zeros((5, 5)))
    p = write_frames(tmp_path, DEFAULT, region=0, scan=0, frames=[0])
    mask = FrameMasks(file=tmp_path / "mask.npy").for_region(0)
    with pytest.raises(FrameError, match="mask file"):
        load_volume(tmp_path, p, region=0, scan=0, window=[0], mask=mask)


def test_a_volume_with_every_pixel_masked_is_a_frame_error(tmp_path):
    p = write_frames(tmp_path, DEFAULT, region=0, scan=0, frames=[4, 5])
    mask = FrameMask(values=(4.0, 5.0))  # every frame is filled with its frame number
    with pytest.raises(FrameError, match="every pixel") as info:
        load_volume(tmp_path, p, region=0, scan=0, window=[4, 5], mask=mask)
    assert info.value.path.endswith("region_0_frame_4_scan_0.npy")


@pytest.mark.parametrize("dtype", [bool, np.complex128, "U3", [("a", "f8"), ("b", "f8")]])
def test_non_numeric_dtypes_are_rejected(tmp_path, dtype):
    data = np.zeros((2, 2), dtype=dtype)
    expect_frame_error(save(tmp_path / "f.npy", data), "dtype")


def test_missing_file_is_a_frame_error(tmp_path):
    expect_frame_error(tmp_path / "nope.npy", "not found")


# ----------------------------------------------------------------------------- volumes


def write_frames(directory, pattern, region, scan, frames, shape=(3, 4), dtype=np.float64):
    p = FramePattern(pattern)
    for f in frames:
        path = directory / p.format(region=region, frame=f, scan=scan)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full(shape, f, dtype=dtype))
    return p


def test_volume_stacks_a_wrapping_window_in_window_order(tmp_path):
    p = write_frames(tmp_path, DEFAULT, region=2, scan=5, frames=range(10))
    window = (8, 9, 0, 1)
    vol = load_volume(tmp_path, p, region=2, scan=5, window=window, expected_shape=(3, 4))
    assert vol.shape == (4, 3, 4)
    assert vol[:, 0, 0].tolist() == [8, 9, 0, 1]


def test_volume_from_per_scan_subdirectories(tmp_path):
    p = write_frames(tmp_path, PER_SCAN, region=0, scan=3, frames=[5, 6, 7], dtype=np.uint16)
    vol = load_volume(tmp_path, p, region=0, scan=3, window=[5, 6, 7])
    assert vol.dtype == np.float32
    assert vol[:, 1, 1].tolist() == [5, 6, 7]


def test_missing_frame_in_window_names_the_file(tmp_path):
    p = write_frames(tmp_path, DEFAULT, region=1, scan=0, frames=[0, 1, 3])
    with pytest.raises(FrameError) as info:
        load_volume(tmp_path, p, region=1, scan=0, window=[0, 1, 2, 3])
    assert "region_1_frame_2_scan_0.npy" in str(info.value)
    assert "missing" in info.value.reason


def test_frames_of_one_volume_must_share_a_shape(tmp_path):
    p = write_frames(tmp_path, DEFAULT, region=1, scan=0, frames=[0])
    write_frames(tmp_path, DEFAULT, region=1, scan=0, frames=[1], shape=(4, 4))
    with pytest.raises(FrameError) as info:
        load_volume(tmp_path, p, region=1, scan=0, window=[0, 1])
    assert info.value.path.endswith("region_1_frame_1_scan_0.npy")


def test_bad_frame_inside_a_volume_names_that_frame(tmp_path):
    p = write_frames(tmp_path, DEFAULT, region=1, scan=0, frames=[0, 1])
    bad = tmp_path / p.format(region=1, frame=1, scan=0)
    bad.write_bytes(bad.read_bytes()[:-8])
    with pytest.raises(FrameError) as info:
        load_volume(tmp_path, p, region=1, scan=0, window=[0, 1])
    assert info.value.path == str(bad)


def test_empty_window_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        load_volume(tmp_path, FramePattern(DEFAULT), region=0, scan=0, window=[])


# ----------------------------------------------------------------------------- scanning


def touch_frame(directory, relpath, data=b"x"):
    path = directory / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def name(region, frame, scan):
    return f"region_{region}_frame_{frame}_scan_{scan}.npy"


def test_poll_reports_each_new_frame_once(tmp_path):
    scanner = DirectoryScanner(tmp_path, DEFAULT)
    for f in range(3):
        touch_frame(tmp_path, name(0, f, 1))
    assert sorted(scanner.poll()) == [(0, 0, 1), (0, 1, 1), (0, 2, 1)]
    assert scanner.poll() == []
    touch_frame(tmp_path, name(4, 9, 2))
    assert scanner.poll() == [FrameKey(4, 9, 2)]
    assert scanner.poll() == []


def test_temporary_names_are_ignored_until_renamed(tmp_path, caplog):
    scanner = DirectoryScanner(tmp_path, DEFAULT)
    tmp = touch_frame(tmp_path, name(0, 1, 2) + ".tmp")
    dot = touch_frame(tmp_path, "." + name(0, 2, 2))
    with caplog.at_level(logging.WARNING, logger="mpitrack.frames"):
        assert scanner.poll() == []
    assert caplog.records == []  # temp names are expected, not warned about
    tmp.rename(tmp_path / name(0, 1, 2))
    dot.rename(tmp_path / name(0, 2, 2))
    assert sorted(scanner.poll()) == [(0, 1, 2), (0, 2, 2)]


def test_empty_file_is_held_until_it_has_data(tmp_path):
    scanner = DirectoryScanner(tmp_path, DEFAULT)
    path = touch_frame(tmp_path, name(1, 1, 1), data=b"")
    assert scanner.poll() == []
    assert scanner.poll() == []
    path.write_bytes(b"data")
    assert scanner.poll() == [FrameKey(1, 1, 1)]
    assert scanner.poll() == []


def test_unknown_names_are_warned_once_and_ignored(tmp_path, caplog):
    scanner = DirectoryScanner(tmp_path, DEFAULT)
    touch_frame(tmp_path, "notes.txt")
    with caplog.at_level(logging.WARNING, logger="mpitrack.frames"):
        assert scanner.poll() == []
        touch_frame(tmp_path, name(0, 0, 0))
        assert scanner.poll() == [FrameKey(0, 0, 0)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "notes.txt" in warnings[0]


def test_per_scan_subdirectories_are_discovered(tmp_path, caplog):
    scanner = DirectoryScanner(tmp_path, PER_SCAN)
    touch_frame(tmp_path, "scan_0/" + name(0, 0, 0))
    touch_frame(tmp_path, "other/" + name(0, 0, 0))
    with caplog.at_level(logging.WARNING, logger="mpitrack.frames"):
        assert scanner.poll() == [FrameKey(0, 0, 0)]
    assert any("other" in r.getMessage() for r in caplog.records)
    touch_frame(tmp_path, "scan_1/" + name(2, 5, 1))
    touch_frame(tmp_path, "scan_0/" + name(0, 1, 0))
    assert sorted(scanner.poll()) == [(0, 1, 0), (2, 5, 1)]
    assert scanner.poll() == []


def test_flat_regex_pattern(tmp_path):
    scanner = DirectoryScanner(tmp_path, r"re:r(?P<region>\d+)_f(?P<frame>\d+)_s(?P<scan>\d+)\.npy")
    touch_frame(tmp_path, "r1_f2_s3.npy")
    touch_frame(tmp_path, "r1_f2_s3.npy.tmp")
    assert scanner.poll() == [FrameKey(1, 2, 3)]


def test_directory_created_after_the_scanner(tmp_path):
    frames = tmp_path / "later"
    scanner = DirectoryScanner(frames, DEFAULT)
    assert scanner.poll() == []
    touch_frame(frames, name(0, 0, 0))
    assert scanner.poll() == [FrameKey(0, 0, 0)]


def test_deleted_and_rewritten_frame_is_reported_again(tmp_path):
    scanner = DirectoryScanner(tmp_path, DEFAULT)
    path = touch_frame(tmp_path, name(0, 0, 0))
    assert scanner.poll() == [FrameKey(0, 0, 0)]
    path.unlink()
    assert scanner.poll() == []
    touch_frame(tmp_path, name(0, 0, 0))
    assert scanner.poll() == [FrameKey(0, 0, 0)]


@pytest.fixture
def listdir_calls(monkeypatch):
    """Record which directories the scanner lists."""
    calls = []
    real = os.listdir

    def spy(path="."):
        calls.append(os.path.basename(os.fspath(path)))
        return real(path)

    monkeypatch.setattr(os, "listdir", spy)
    return calls


def test_unchanged_directories_are_not_listed_again(tmp_path, listdir_calls):
    scanner = DirectoryScanner(tmp_path, PER_SCAN, racy_s=0)
    touch_frame(tmp_path, "scan_0/" + name(0, 0, 0))
    touch_frame(tmp_path, "scan_1/" + name(0, 0, 1))
    assert len(scanner.poll()) == 2
    listdir_calls.clear()
    assert scanner.poll() == []
    assert listdir_calls == []
    touch_frame(tmp_path, "scan_1/" + name(0, 1, 1))
    assert scanner.poll() == [FrameKey(0, 1, 1)]
    assert listdir_calls == ["scan_1"]


def test_racy_directory_is_listed_again_even_if_mtime_is_unchanged(tmp_path):
    def add_without_mtime_change(scanner_dir, relpath):
        before = os.stat(scanner_dir).st_mtime_ns
        touch_frame(scanner_dir, relpath)
        os.utime(scanner_dir, ns=(before, before))

    careful = DirectoryScanner(tmp_path / "a", DEFAULT)  # default racy window
    careless = DirectoryScanner(tmp_path / "b", DEFAULT, racy_s=0)
    for scanner in (careful, careless):
        touch_frame(scanner.directory, name(0, 0, 0))
        assert scanner.poll() == [FrameKey(0, 0, 0)]
        add_without_mtime_change(scanner.directory, name(0, 1, 0))
    assert careful.poll() == [FrameKey(0, 1, 0)]
    assert careless.poll() == []  # what the racy window protects against


def test_corrupted_bytes_only_ever_raise_frame_error(tmp_path):
    """Producers' files are untrusted: no mutation may escape as another exception."""
    base = save(tmp_path / "base.npy", np.ones((5, 5), np.float32)).read_bytes()
    rng = np.random.default_rng(7)
    path = tmp_path / "f.npy"
    outcomes = set()
    for _ in range(400):
        raw = bytearray(base)
        for pos in rng.integers(8, 128, size=rng.integers(1, 4)):
            raw[pos] = rng.integers(32, 127)
        if rng.random() < 0.2:
            raw = raw[: rng.integers(0, len(raw))]
        path.write_bytes(bytes(raw))
        try:
            out = load_frame(path)
        except FrameError:
            outcomes.add("rejected")
        else:
            assert out.ndim == 2 and np.isfinite(out).all()
            outcomes.add("loaded")
    assert "rejected" in outcomes


def test_regex_pattern_with_subdirectories(tmp_path, caplog):
    # "[^/]" makes the '/' count overestimate the depth; files must still be found.
    pattern = r"re:scan_(?P<scan>\d+)/[^/]*_r(?P<region>\d+)_f(?P<frame>\d+)\.npy"
    scanner = DirectoryScanner(tmp_path, pattern)
    touch_frame(tmp_path, "scan_2/x_r1_f5.npy")
    touch_frame(tmp_path, "scan_2/deeper/x_r1_f6.npy")
    with caplog.at_level(logging.WARNING, logger="mpitrack.frames"):
        assert scanner.poll() == [FrameKey(1, 5, 2)]
    assert any("x_r1_f6.npy" in r.getMessage() for r in caplog.records)


def test_unexpected_subdirectory_in_flat_layout_is_warned_once(tmp_path, caplog):
    scanner = DirectoryScanner(tmp_path, DEFAULT)
    touch_frame(tmp_path, "junk/" + name(0, 0, 0))
    with caplog.at_level(logging.WARNING, logger="mpitrack.frames"):
        assert scanner.poll() == []
        touch_frame(tmp_path, name(0, 1, 0))
        assert scanner.poll() == [FrameKey(0, 1, 0)]
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "junk" in messages[0]


def test_pending_file_deleted_and_recreated_is_still_reported(tmp_path):
    scanner = DirectoryScanner(tmp_path, DEFAULT)
    path = touch_frame(tmp_path, name(0, 0, 0), data=b"")
    assert scanner.poll() == []
    path.unlink()
    scanner._check_pending([], 0)  # the deletion is noticed before the next listing
    touch_frame(tmp_path, name(0, 0, 0))
    assert scanner.poll() == [FrameKey(0, 0, 0)]


# ------------------------------------------------------------- unusable and unfinished files


def test_errors_never_echo_the_bytes_of_a_file(tmp_path):
    secret = tmp_path / "secret.npy"
    secret.write_bytes(b"s3cr3t-token: hunter2\n" * 10)
    header_only = save(tmp_path / "h.npy", np.ones((2, 2)))
    raw = bytearray(header_only.read_bytes())
    raw[12:30] = b"'hunter2': 'xx', ("
    header_only.write_bytes(bytes(raw))
    for path in (secret, header_only):
        with pytest.raises(FrameError) as caught:
            load_frame(path)
        assert "s3cr3t" not in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_directory_with_a_frames_name_fails_clearly(tmp_path):
    (tmp_path / name(0, 0, 0)).mkdir()
    with pytest.raises(FrameError, match="is a directory, not a frame file"):
        load_frame(tmp_path / name(0, 0, 0))


def test_a_directory_with_a_frames_name_is_reported_with_a_warning(tmp_path, caplog):
    (tmp_path / name(2, 5, 1)).mkdir()
    with caplog.at_level(logging.WARNING, logger="mpitrack.frames"):
        assert DirectoryScanner(tmp_path, DEFAULT).poll() == [FrameKey(2, 5, 1)]
    assert "is a directory" in caplog.text and "region 2 scan 1" in caplog.text


def test_an_empty_file_that_stays_empty_is_reported_after_the_settle_time(tmp_path):
    scanner = DirectoryScanner(tmp_path, DEFAULT, settle_s=5.0)
    path = touch_frame(tmp_path, name(1, 1, 1), data=b"")
    assert scanner.poll() == []
    old = path.stat().st_mtime - 6.0
    os.utime(path, (old, old))  # empty and unchanged for longer than settle_s
    assert scanner.poll() == [FrameKey(1, 1, 1)]


def test_a_frame_written_in_place_is_read_again_until_complete(tmp_path):
    path = save(tmp_path / "f.npy", np.arange(35 * 35, dtype=np.float32).reshape(35, 35))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])  # the writer pauses half way

    def finish() -> None:
        time.sleep(0.3)
        with path.open("ab") as out:
            out.write(whole[len(whole) // 2 :])

    writer = threading.Thread(target=finish)
    writer.start()
    try:
        frame = read_settled(lambda: load_frame(path), settle_s=5.0)
    finally:
        writer.join()
    assert frame[34, 34] == 35 * 35 - 1


def test_a_short_file_left_alone_for_the_settle_time_fails(tmp_path):
    path = save(tmp_path / "f.npy", np.ones((35, 35)))
    path.write_bytes(path.read_bytes()[:-100])
    old = path.stat().st_mtime - 10.0
    os.utime(path, (old, old))
    started = time.monotonic()
    with pytest.raises(FrameError, match="truncated"):
        read_settled(lambda: load_frame(path), settle_s=5.0)
    assert time.monotonic() - started < 1.0  # nothing to wait for


def test_links_out_of_the_frame_directory_are_refused(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    outside = save(tmp_path / "outside.npy", np.ones((2, 2)))
    inside = save(frames / "inside.npy", np.ones((2, 2)))
    (frames / name(0, 0, 0)).symlink_to(outside)
    (frames / name(0, 1, 0)).symlink_to(inside)  # a link within the directory is fine
    pattern = FramePattern(DEFAULT)
    refuse_outside_links(frames, pattern, 0, 0, [1])
    with pytest.raises(FrameError, match="symbolic link out of the frame directory"):
        refuse_outside_links(frames, pattern, 0, 0, [1, 0])


def test_a_scan_directory_linked_out_of_the_frame_directory_is_refused(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    save(elsewhere / name(0, 0, 0), np.ones((2, 2)))
    (frames / "scan_0").symlink_to(elsewhere)
    with pytest.raises(FrameError, match="symbolic link out of the frame directory"):
        refuse_outside_links(frames, FramePattern(PER_SCAN), 0, 0, [0])


def test_a_volume_of_mixed_dtypes_is_float64_and_exact(tmp_path):
    p = write_frames(tmp_path, DEFAULT, region=0, scan=0, frames=[0], dtype=np.uint16)
    big = 2**40 + 1
    np.save(tmp_path / p.format(region=0, frame=1, scan=0), np.full((3, 4), big, dtype=np.int64))
    vol = load_volume(tmp_path, p, region=0, scan=0, window=[0, 1])
    assert vol.dtype == np.float64
    assert vol[:, 0, 0].tolist() == [0.0, float(big)]


def test_an_infinite_value_in_a_volume_names_its_frame(tmp_path):
    p = write_frames(tmp_path, DEFAULT, region=0, scan=0, frames=[0, 1, 2])
    data = np.ones((3, 4))
    data[2, 2] = np.inf
    bad = tmp_path / p.format(region=0, frame=1, scan=0)
    np.save(bad, data)
    with pytest.raises(FrameError, match="1 infinite value") as info:
        load_volume(tmp_path, p, region=0, scan=0, window=[0, 1, 2])
    assert info.value.path == str(bad)


def test_a_header_seen_before_is_still_checked_against_each_file(tmp_path):
    good = save(tmp_path / "good.npy", np.ones((6, 7)))
    assert load_frame(good).shape == (6, 7)  # its header is now known
    cut = tmp_path / "cut.npy"
    cut.write_bytes(good.read_bytes()[:-16])
    expect_frame_error(cut, "truncated")
    expect_frame_error(good, "shape", expected_shape=(7, 6))
