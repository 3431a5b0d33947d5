"""Omega windows: inclusive, in window order, wrapping through frame 0."""

import pytest

from mpitrack.regions import omega_window


def test_plain_window_is_inclusive():
    assert omega_window(100, 103, 1440) == (100, 101, 102, 103)


def test_single_frame_window():
    assert omega_window(7, 7, 10) == (7,)


def test_wrapping_window_runs_through_zero_in_window_order():
    assert omega_window(1437, 2, 1440) == (1437, 1438, 1439, 0, 1, 2)


def test_full_circle_window_has_every_frame_once():
    window = omega_window(3, 2, 10)
    assert window == (3, 4, 5, 6, 7, 8, 9, 0, 1, 2)
    assert omega_window(0, 9, 10) == tuple(range(10))


@pytest.mark.parametrize(
    ("start", "end", "bad"),
    [(-1, 3, "start=-1"), (10, 3, "start=10"), (0, 10, "end=10"), (2, -5, "end=-5")],
)
def test_out_of_range_bounds_name_the_bad_value(start, end, bad):
    with pytest.raises(ValueError, match=bad):
        omega_window(start, end, 10)


def test_frames_per_scan_must_be_positive():
    with pytest.raises(ValueError, match="frames_per_scan"):
        omega_window(0, 0, 0)
