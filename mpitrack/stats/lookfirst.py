"""Which regions need a look first: per-region trouble scores from the rows, pure.

With thousands of regions nobody browses them all; the report's gallery
lists, for each kind of trouble, the regions that have the most of it:

- ID changes: a track that began within ``n_scan`` scans after another one
  of the region was last detected, within 2 FWHM of where that one was (the
  tracker lost a spot and started a new id for it, or swapped ids);
- overlaps: rows whose spot is shared with another track;
- late births: tracks that began in the later half of the scans so far
  (a new reflection, or clutter that became a track);
- broadening: the largest relative growth of a track's FWHM along any axis,
  median of its last three clean detections over the median of its first
  three (clean: detected and not overlapping, whose widths are the spot's own);
- hot pixels: rejected hot pixels (zingers) per region, summed from the job
  log when the workers report them (`joblog.py`); absent otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from mpitrack.stats.spotrows import SpotRow

# Handover distance in units of the lost track's FWHM.
_HANDOVER_FWHM = 2.0
# Without a width, this many voxels.
_HANDOVER_VOXELS = 3.0
_ENDS = 3  # clean detections at each end of a track for its broadening


@dataclass(frozen=True)
class RegionMetrics:
    """One region's trouble scores (see the module docstring)."""

    region: int
    tracks: int
    first_scan: int
    last_scan: int
    overlaps: int
    misses: int
    id_changes: int
    late_births: int
    broadening: float | None  # relative (0.3 = +30 %); None: no track with enough clean spots
    broadening_axis: str = ""


Triple = tuple[float, float, float]


@dataclass
class TrackTally:
    """What the scores need of one track, folded over its rows in scan order.

    start: the first row (birth) scan and position; last: the newest
    detection's scan, position and FWHM; first_clean / last_clean: the FWHM of
    the first and the newest ``_ENDS`` clean detections; clean: how many.
    """

    start_scan: int
    start_position: Triple
    last_scan: int | None = None
    last_position: Triple | None = None
    last_fwhm: Triple | None = None
    first_clean: list[Triple] = field(default_factory=list)
    last_clean: list[Triple] = field(default_factory=list)
    clean: int = 0

    def copy(self) -> TrackTally:
        return dataclasses.replace(
            self, first_clean=list(self.first_clean), last_clean=list(self.last_clean)
        )

    def add(self, row: SpotRow) -> None:
        if not row.detected:
            return
        self.last_scan, self.last_position, self.last_fwhm = row.scan, row.position, row.fwhm
        if row.overlapping or row.fwhm is None:
            return
        self.clean += 1
        if len(self.first_clean) < _ENDS:
            self.first_clean.append(row.fwhm)
        self.last_clean = [*self.last_clean, row.fwhm][-_ENDS:]


@dataclass
class RegionTally:
    """A region's rows folded for the scores, so a new scan costs its own rows only.

    Rows must be added in scan order; a copy takes the rows of the open window
    on top of the final ones (`RegionTally.copy`).
    """

    tracks: dict[int, TrackTally] = field(default_factory=dict)
    overlaps: int = 0
    misses: int = 0
    first_scan: int | None = None
    last_scan: int | None = None

    def add(self, row: SpotRow) -> None:
        track = self.tracks.get(row.track)
        if track is None:
            track = self.tracks[row.track] = TrackTally(row.scan, row.position)
        track.add(row)
        self.overlaps += row.overlapping
        self.misses += not row.detected
        self.first_scan = row.scan if self.first_scan is None else min(self.first_scan, row.scan)
        self.last_scan = row.scan if self.last_scan is None else max(self.last_scan, row.scan)

    def copy(self) -> RegionTally:
        tracks = {k: t.copy() for k, t in self.tracks.items()}
        return RegionTally(tracks, self.overlaps, self.misses, self.first_scan, self.last_scan)

    def to_json(self) -> dict:
        return {
            "tracks": {str(t): dataclasses.asdict(v) for t, v in self.tracks.items()},
            "counts": [self.overlaps, self.misses, self.first_scan, self.last_scan],
        }

    @classmethod
    def from_json(cls, data: Mapping) -> RegionTally:
        def triple(v):
            return None if v is None else (float(v[0]), float(v[1]), float(v[2]))

        tracks = {}
        for key, v in data["tracks"].items():
            tracks[int(key)] = TrackTally(
                int(v["start_scan"]),
                triple(v["start_position"]),
                v["last_scan"],
                triple(v["last_position"]),
                triple(v["last_fwhm"]),
                [triple(w) for w in v["first_clean"]],
                [triple(w) for w in v["last_clean"]],
                int(v["clean"]),
            )
        overlaps, misses, first_scan, last_scan = data["counts"]
        return cls(tracks, int(overlaps), int(misses), first_scan, last_scan)


def tally(rows: Iterable[SpotRow]) -> RegionTally:
    """The tally of a region's rows (any order)."""
    out = RegionTally()
    for row in sorted(rows, key=lambda r: (r.scan, r.track)):
        out.add(row)
    return out


def _handovers(tracks: Mapping[int, TrackTally], gap: int) -> int:
    found = 0
    for track, new in tracks.items():
        for other, lost in tracks.items():
            if other == track or lost.last_scan is None or lost.last_position is None:
                continue
            # Lost before the new track began (never detected again), within the window.
            if not 0 < new.start_scan - lost.last_scan <= gap:
                continue
            width = lost.last_fwhm
            scale = (
                np.asarray(width) * _HANDOVER_FWHM
                if width and min(width) > 0
                else np.full(3, _HANDOVER_VOXELS)
            )
            offset = np.subtract(new.start_position, lost.last_position) / scale
            if np.linalg.norm(offset) <= 1.0:
                found += 1
                break
    return found


def _broadening(tracks: Mapping[int, TrackTally], axes: Sequence[str]) -> tuple[float | None, str]:
    best: float | None = None
    best_axis = ""
    for track in tracks.values():
        ends = min(_ENDS, track.clean // 2)
        if ends < 1:
            continue
        first = np.median(np.array(track.first_clean[:ends]), axis=0)
        last = np.median(np.array(track.last_clean[-ends:]), axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = np.where(first > 0, last / first - 1.0, np.nan)
        if np.all(np.isnan(growth)):
            continue
        axis = int(np.nanargmax(growth))
        if best is None or growth[axis] > best:
            best, best_axis = float(growth[axis]), axes[axis]
    return best, best_axis


def region_metrics(
    region: int,
    rows: RegionTally,
    run_first_scan: int,
    newest_scan: int,
    n_scan: int,
    axes: Sequence[str] = ("omega", "eta", "tth"),
) -> RegionMetrics:
    """The trouble scores of a region from the tally of all its rows.

    run_first_scan, newest_scan: the run's scan range so far (late = in its later half).
    n_scan: the MHT window; a handover is a start within that many scans of a loss.
    """
    middle = run_first_scan + (newest_scan - run_first_scan) / 2.0
    late = sum(
        1 for t in rows.tracks.values() if t.start_scan > run_first_scan and t.start_scan >= middle
    )
    broadening, axis = _broadening(rows.tracks, axes)
    return RegionMetrics(
        region=region,
        tracks=len(rows.tracks),
        first_scan=run_first_scan if rows.first_scan is None else rows.first_scan,
        last_scan=run_first_scan if rows.last_scan is None else rows.last_scan,
        overlaps=rows.overlaps,
        misses=rows.misses,
        id_changes=_handovers(rows.tracks, max(n_scan, 1)),
        late_births=late,
        broadening=broadening,
        broadening_axis=axis,
    )


@dataclass(frozen=True)
class Look:
    """One gallery row: a kind of trouble and its worst regions, worst first."""

    key: str
    title: str
    caption: str
    regions: tuple[tuple[int, str], ...]  # (region, value as shown)


def _top(values: Mapping[int, float], limit: int) -> list[int]:
    ranked = sorted((-v, r) for r, v in values.items() if v > 0)
    return [r for _, r in ranked[:limit]]


def looks(
    metrics: Mapping[int, RegionMetrics],
    hot_pixels: Mapping[int, int] | None = None,
    limit: int = 8,
) -> list[Look]:
    """The gallery: for each kind of trouble, up to ``limit`` regions with the most of it.

    hot_pixels: rejected hot pixels per region (from the job log); the row is
    left out when no region reports any, with a caption saying so.
    """
    out: list[Look] = []

    def add(key: str, title: str, caption: str, values: Mapping[int, float], fmt) -> None:
        chosen = _top(values, limit)
        out.append(Look(key, title, caption, tuple((r, fmt(r, values[r])) for r in chosen)))

    def counted(noun: str):
        return lambda r, v: f"{int(v)} {noun}{'s' if v != 1 else ''}"

    add(
        "id_changes",
        "Most ID changes",
        "a track began near where another was lost, within the MHT window",
        {r: m.id_changes for r, m in metrics.items()},
        counted("ID change"),
    )
    add(
        "overlaps",
        "Most overlaps",
        "rows whose spot is shared with another track",
        {r: m.overlaps for r, m in metrics.items()},
        counted("overlapping row"),
    )
    add(
        "late_births",
        "Births late in the run",
        "tracks that began in the later half of the scans so far",
        {r: m.late_births for r, m in metrics.items()},
        counted("late birth"),
    )
    add(
        "broadening",
        "Largest broadening since the first scan",
        "FWHM growth of a track, last three clean detections over its first three",
        {r: m.broadening for r, m in metrics.items() if m.broadening is not None},
        lambda r, v: f"{v:+.0%} FWHM {metrics[r].broadening_axis}",
    )
    if hot_pixels and any(v > 0 for v in hot_pixels.values()):
        add(
            "hot_pixels",
            "Most rejected zingers and hot pixels",
            "zingers and hot pixels detection rejected, summed over the region's jobs",
            dict(hot_pixels),
            lambda r, v: f"{int(v)} rejected",
        )
    else:
        out.append(
            Look(
                "hot_pixels",
                "Most rejected zingers and hot pixels",
                "none rejected in this run (or the job log has no counts)",
                (),
            )
        )
    return out
