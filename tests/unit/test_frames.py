"""Frame names, validated loading, volume assembly and the incremental directory scan."""

import logging
import os

import numpy as np
import pytest

from mpitrack.frames import (
    DirectoryScanner,
    FrameError,
    FrameKey,
    FramePattern,
    load_frame,
    load_volume,
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


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_and_counted(tmp_path, bad):
    data = np.ones((4, 4))
    data[1, 2] = bad
    data[3, 0] = bad
    err = expect_frame_error(save(tmp_path / "f.npy", data), "non-finite")
    assert err.reason.startswith("2 ")


def test_float16_overflow_to_inf_is_rejected(tmp_path):
    data = np.array([[1.0, np.inf]], dtype=np.float16)
    expect_frame_error(save(tmp_path / "f.npy", data), "1 non-finite")


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
