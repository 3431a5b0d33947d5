"""What a spot strip knows about one track in one scan, and which decisions were revised.

The strips show the tracker's decisions next to the pixels: detected alone,
detected but shared (overlapping), missed (the prediction), and, while a
scan is inside the MHT's open window, whether a later commit changed what
was shown first. The database keeps only the current best hypothesis, so the
first decision shown is remembered here (`ShownRow.first`) and compared with
every later answer for the same (scan, track).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Bbox = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
# What counts as the same decision: detected, overlapping, which spot (its bbox), shared with whom.
Decision = tuple[bool, bool, Bbox | None, tuple[int, ...]]


@dataclass(frozen=True)
class SpotRow:
    """One track in one scan (one measurement row), as the strips need it.

    position: the track's centre (omega, axis1, axis2) in region-local voxels
        (the estimate when overlapping, the prediction when missed).
    bbox: the detected spot's inclusive [lo, hi] voxel range per axis; None when missed.
    fwhm: the spot's FWHM per axis (voxels); None when missed.
    overlap_with: the other tracks sharing the spot.
    unusable: the scan's data were unusable (predicted through, not a miss).
    """

    track: int
    scan: int
    detected: bool
    overlapping: bool
    position: tuple[float, float, float]
    bbox: Bbox | None = None
    fwhm: tuple[float, float, float] | None = None
    overlap_with: tuple[int, ...] = ()
    unusable: bool = False

    @property
    def decision(self) -> Decision:
        return (self.detected, self.overlapping, self.bbox, self.overlap_with)

    def to_json(self) -> list:
        return [
            self.track,
            self.scan,
            self.detected,
            self.overlapping,
            [round(p, 3) for p in self.position],
            None if self.bbox is None else [list(b) for b in self.bbox],
            None if self.fwhm is None else [round(w, 3) for w in self.fwhm],
            list(self.overlap_with),
            self.unusable,
        ]

    @classmethod
    def from_json(cls, data: Sequence) -> SpotRow:
        track, scan, detected, overlapping, position, bbox, fwhm, overlap_with, unusable = data
        return cls(
            int(track),
            int(scan),
            bool(detected),
            bool(overlapping),
            _triple(position),
            None if bbox is None else _bbox(bbox),
            None if fwhm is None else _triple(fwhm),
            tuple(int(t) for t in overlap_with),
            bool(unusable),
        )


def _triple(values: Sequence) -> tuple[float, float, float]:
    a, b, c = (float(v) for v in values)
    return (a, b, c)


def _bbox(values: Sequence) -> Bbox:
    a, b, c = ((int(lo), int(hi)) for lo, hi in values)
    return (a, b, c)


def row_from_features(
    track: int,
    scan: int,
    detected: bool,
    overlapping: bool,
    features: Mapping,
    axes: Sequence[str],
) -> SpotRow:
    """A SpotRow from a stored row's features (keys named by ``axes``, omega first).

    A feature document without a position (not one the tracker writes) raises
    ValueError naming the track and scan.
    """
    position = features.get("position") or {}
    try:
        centre = _triple([position[a] for a in axes])
    except (KeyError, TypeError, ValueError):
        raise ValueError(
            f"track {track} scan {scan}: features have no position along {list(axes)}"
        ) from None
    bbox = fwhm = None
    if detected:
        box, width = features.get("bbox"), features.get("fwhm")
        if isinstance(box, Mapping) and all(a in box for a in axes):
            bbox = _bbox([box[a] for a in axes])
        if isinstance(width, Mapping) and all(a in width for a in axes):
            fwhm = _triple([width[a] for a in axes])
    return SpotRow(
        track=track,
        scan=scan,
        detected=detected,
        overlapping=overlapping,
        position=centre,
        bbox=bbox,
        fwhm=fwhm,
        overlap_with=tuple(int(t) for t in features.get("overlap_with") or ()),
        unusable=bool(features.get("unusable_scan", False)),
    )


@dataclass(frozen=True)
class ShownRow:
    """A row as the strips show it, with its history.

    first: the decision shown the first time this (scan, track) appeared; None
        when the track was added to a scan that had been shown without it.
    revised: a later commit changed the decision shown first (it stays set:
        the page showed something else for a while).
    """

    row: SpotRow
    first: Decision | None
    revised: bool = False

    def to_json(self) -> list:
        first = None
        if self.first is not None:
            detected, overlapping, bbox, overlap_with = self.first
            box = None if bbox is None else [list(b) for b in bbox]
            first = [detected, overlapping, box, list(overlap_with)]
        return [self.row.to_json(), first, self.revised]

    @classmethod
    def from_json(cls, data: Sequence) -> ShownRow:
        row, first, revised = data
        decision: Decision | None = None
        if first is not None:
            detected, overlapping, bbox, overlap_with = first
            box = None if bbox is None else _bbox(bbox)
            decision = (bool(detected), bool(overlapping), box, tuple(int(t) for t in overlap_with))
        return cls(SpotRow.from_json(row), decision, bool(revised))


def merge_rows(
    shown: Mapping[tuple[int, int], ShownRow],
    new_rows: Iterable[SpotRow],
    from_scan: int | None,
    seen_through: int | None,
) -> dict[tuple[int, int], ShownRow]:
    """The rows to show after a commit replaced the rows of scans >= ``from_scan``.

    shown: the rows shown so far, keyed (scan, track).
    new_rows: every current row of scans >= from_scan (None: of every scan).
    seen_through: the newest scan shown so far (rows of scans up to it were
        on the page before); None before the first page.
    """
    out = {key: old for key, old in shown.items() if from_scan is not None and key[0] < from_scan}
    for row in new_rows:
        key = (row.scan, row.track)
        old = shown.get(key)
        if old is not None:
            revised = old.revised or old.first != row.decision
            out[key] = ShownRow(row, old.first, revised)
        elif seen_through is not None and row.scan <= seen_through:
            out[key] = ShownRow(row, None, True)
        else:
            out[key] = ShownRow(row, row.decision, False)
    return out


def open_from(newest_scan: int, n_scan: int) -> int:
    """The first scan whose rows a later commit may still revise.

    The MHT's commit of scan s rewrites scans s - (n_scan - 1) .. s and then
    finalises the oldest of them, so after s only the n_scan - 1 newest scans
    stay open (with n_scan = 1 nothing does: decisions are final at once).
    """
    return newest_scan - max(n_scan - 2, 0) if n_scan > 1 else newest_scan + 1


def rewritten_from(newest_scan: int, n_scan: int) -> int:
    """The oldest scan whose rows the commit of ``newest_scan`` may have rewritten."""
    return newest_scan - max(n_scan - 1, 0)


@dataclass(frozen=True)
class Cell:
    """One track in one scan, as a strip shows it."""

    row: SpotRow
    open: bool = False  # inside the MHT's open window: may still be revised
    revised: bool = False  # changed since first shown


def cell_state(cell: Cell) -> str:
    """'overlap', 'detected' or 'missed': what the cell's border says."""
    if not cell.row.detected:
        return "missed"
    return "overlap" if cell.row.overlapping else "detected"


def cell_flags(cell: Cell) -> tuple[str, str]:
    """Short words for a cell: the decision (miss, overlap with whom) and its history."""
    decision = ""
    if not cell.row.detected:
        decision = "NO DATA" if cell.row.unusable else "MISS"
    elif cell.row.overlapping:
        shared = "+".join(str(t) for t in cell.row.overlap_with)
        decision = f"OVL+{shared}" if shared else "OVL"
    elif cell.row.overlap_with:  # shares the blob, but both centres are resolved
        decision = "SHR+" + "+".join(str(t) for t in cell.row.overlap_with)
    history = " ".join(w for w, on in (("REV", cell.revised), ("OPEN", cell.open)) if on)
    return decision, history
