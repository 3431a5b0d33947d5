"""The strips' rows: parsing, revision marks, the open window, look-first scores, the job log."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mpitrack.stats.joblog import JobLogCounts
from mpitrack.stats.lookfirst import RegionTally, looks, region_metrics, tally
from mpitrack.stats.spotrows import (
    ShownRow,
    SpotRow,
    merge_rows,
    open_from,
    rewritten_from,
    row_from_features,
)

AXES = ("omega", "eta", "tth")


def _detected(track, scan, pos=(5.0, 10.0, 10.0), fwhm=(2.0, 3.0, 3.0), overlapping=False, box=0):
    bbox = ((box, box + 4), (8, 12), (8, 12))
    return SpotRow(track, scan, True, overlapping, pos, bbox, fwhm)


def _missed(track, scan, pos=(5.0, 10.0, 10.0)):
    return SpotRow(track, scan, False, False, pos)


def test_rows_are_read_from_the_trackers_features() -> None:
    features = {
        "position": {"omega": 4.5, "eta": 10.25, "tth": 3.0},
        "bbox": {"omega": [3, 6], "eta": [8, 12], "tth": [1, 5]},
        "fwhm": {"omega": 2.0, "eta": 3.5, "tth": 3.25},
        "overlap_with": [7],
    }
    row = row_from_features(2, 9, True, True, features, AXES)
    assert row == SpotRow(
        2, 9, True, True, (4.5, 10.25, 3.0), ((3, 6), (8, 12), (1, 5)), (2.0, 3.5, 3.25), (7,)
    )
    missed = {"position": {"omega": 1, "eta": 2, "tth": 3}, "predicted": True}
    assert row_from_features(2, 10, False, False, missed, AXES) == SpotRow(
        2, 10, False, False, (1.0, 2.0, 3.0)
    )
    unusable = {**missed, "unusable_scan": True}
    assert row_from_features(2, 11, False, False, unusable, AXES).unusable
    with pytest.raises(ValueError, match="track 2 scan 9: features have no position"):
        row_from_features(2, 9, True, False, {"position": {"omega": 1}}, AXES)
    assert ShownRow.from_json(json.loads(json.dumps(ShownRow(row, row.decision).to_json()))) == (
        ShownRow(row, row.decision)
    )


def test_a_changed_decision_stays_marked_revised() -> None:
    shown = merge_rows({}, [_detected(1, 0), _detected(2, 0, box=5)], None, None)
    assert not any(s.revised for s in shown.values())
    # Scan 1 arrives; the commit also rewrites scan 0: track 1 now overlaps.
    rows = [_detected(1, 0, overlapping=True), _detected(2, 0, box=5), _detected(1, 1)]
    shown = merge_rows(shown, rows, 0, 0)
    assert shown[(0, 1)].revised and not shown[(0, 2)].revised and not shown[(1, 1)].revised
    # Back to the first answer: it was revised (the page showed something else meanwhile).
    shown = merge_rows(shown, [_detected(1, 0), _detected(2, 0, box=5), _detected(1, 1)], 0, 1)
    assert shown[(0, 1)].revised
    # A track that appears in a scan shown before without it is a revision too;
    # rows of scans before the rewritten ones are kept, withdrawn rows are dropped.
    shown = merge_rows(shown, [_detected(3, 1, box=9)], 1, 1)
    assert shown[(1, 3)].revised and shown[(1, 3)].first is None
    assert (1, 1) not in shown and (0, 1) in shown and (0, 2) in shown
    # An id swap between two tracks: both decisions change.
    before = merge_rows({}, [_detected(1, 4, box=0), _detected(2, 4, box=5)], None, None)
    after = merge_rows(before, [_detected(1, 4, box=5), _detected(2, 4, box=0)], 4, 4)
    assert after[(4, 1)].revised and after[(4, 2)].revised


def test_the_open_window() -> None:
    # n_scan = 3: the commit of scan 10 rewrites 8..10 and finalises 8; 9 and 10 stay open.
    assert rewritten_from(10, 3) == 8 and open_from(10, 3) == 9
    assert rewritten_from(10, 1) == 10 and open_from(10, 1) == 11  # nothing open
    assert open_from(10, 2) == 10


def test_look_first_scores_known_answers() -> None:
    far_away = (5.0, 30.0, 30.0)
    rows = [
        # Track 1: detected 0..3, missed in 4, gone; track 2 begins at scan 5 one voxel
        # from where track 1 was last seen: the tracker lost the spot's id (a handover).
        *[_detected(1, s, fwhm=(2.0, 3.0, 3.0)) for s in range(4)],
        _missed(1, 4),
        *[_detected(2, s, pos=(5.0, 11.0, 10.0)) for s in range(5, 12)],
        # Track 3 lives throughout far away; its eta FWHM grows from 2 to 3; overlapping in 6.
        *[
            _detected(3, s, far_away, (2.0, 2.0 + s / 11, 2.0), overlapping=s == 6, box=20)
            for s in range(12)
        ],
    ]
    metrics = region_metrics(7, tally(rows), 0, 11, n_scan=3, axes=AXES)
    assert (metrics.tracks, metrics.overlaps, metrics.misses) == (3, 1, 1)
    assert metrics.id_changes == 1
    assert metrics.late_births == 0  # track 2 began at 5, before the middle of 0..11
    # Median of the last three clean detections (9, 10, 11) over the first three (0, 1, 2).
    assert metrics.broadening == pytest.approx((2.0 + 10 / 11) / (2.0 + 1 / 11) - 1.0)
    assert metrics.broadening_axis == "eta"
    # Far from where track 1 was lost, or beyond the MHT window after it: no handover.
    moved = [replace(r, position=(5.0, 20.0, 20.0)) if r.track == 2 else r for r in rows]
    assert region_metrics(7, tally(moved), 0, 11, n_scan=3, axes=AXES).id_changes == 0
    later = [r for r in rows if not (r.track == 2 and r.scan < 8)]
    assert region_metrics(7, tally(later), 0, 11, n_scan=3, axes=AXES).id_changes == 0


def test_late_births_are_in_the_later_half_of_the_scans_so_far() -> None:
    rows = [_detected(1, s) for s in range(10)] + [_detected(2, s, box=9) for s in (6, 7)]
    assert region_metrics(0, tally(rows), 0, 9, 3, AXES).late_births == 1
    assert region_metrics(0, tally(rows), 0, 14, 3, AXES).late_births == 0  # 6 < 7 = the middle now


def test_gallery_ranks_regions_and_leaves_out_what_is_not_reported(tmp_path: Path) -> None:
    def metrics(region, overlaps):
        rows = [_detected(1, s, overlapping=s < overlaps) for s in range(6)]
        return region_metrics(region, tally(rows), 0, 5, 3, AXES)

    chosen = {look.key: look for look in looks({r: metrics(r, r) for r in range(5)}, limit=3)}
    assert [r for r, _ in chosen["overlaps"].regions] == [4, 3, 2]
    assert chosen["overlaps"].regions[0][1] == "4 overlapping rows"
    assert chosen["id_changes"].regions == ()
    assert chosen["hot_pixels"].regions == () and "none rejected" in chosen["hot_pixels"].caption
    with_hot = {look.key: look for look in looks({}, hot_pixels={3: 12, 1: 40, 2: 0})}
    assert with_hot["hot_pixels"].regions == ((1, "40 rejected"), (3, "12 rejected"))


def test_job_log_counts_are_read_incrementally_and_retries_replace(tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    counts = JobLogCounts(path)
    assert counts.totals() == {}  # no log yet

    def line(event, region, scan, value=None):
        record = {"event": event, "region": region, "scan": scan, "worker": 1}
        if value is not None:
            record["zingers"] = value
        return json.dumps(record) + "\n"

    path.write_text(line("dispatch", 1, 0) + line("done", 1, 0, 3) + line("done", 2, 0))
    assert counts.totals() == {1: 3.0}
    with path.open("a") as stream:
        stream.write(line("done", 1, 1, 4) + line("done", 1, 0, 5) + '{"event": "done", "reg')
    assert counts.totals() == {1: 9.0}  # 5 replaced 3 (a retry); the half line waits
    with path.open("a") as stream:
        stream.write('ion": 2, "scan": 1, "worker": 1, "zingers": 2}\n')
    assert counts.totals() == {1: 9.0, 2: 2.0}
    with path.open("a") as stream:  # zingers and hot pixels add up
        stream.write(
            json.dumps({"event": "done", "region": 3, "scan": 0, "zingers": 1, "hot_pixels": 2})
            + "\n"
        )
    assert counts.totals()[3] == 3.0


def test_a_tally_folded_in_parts_scores_like_one_pass() -> None:
    rows = [_detected(1, s, fwhm=(2.0, 2.0 + s / 5, 3.0), overlapping=s == 3) for s in range(9)]
    rows += [_missed(2, s) for s in (4, 5)] + [_detected(3, 7, pos=(5.0, 10.5, 10.0))]
    whole = tally(rows)
    parts = tally(r for r in rows if r.scan < 5)
    parts = RegionTally.from_json(json.loads(json.dumps(parts.to_json())))
    copied = parts.copy()
    for row in sorted((r for r in rows if r.scan >= 5), key=lambda r: (r.scan, r.track)):
        copied.add(row)
    assert copied == whole and parts != whole  # the copy left the saved tally alone
    assert region_metrics(0, copied, 0, 8, 3, AXES) == region_metrics(0, whole, 0, 8, 3, AXES)
