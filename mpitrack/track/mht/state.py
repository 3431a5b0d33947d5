"""The MHT's state: entries, leaves, trees and scan records.

This is everything a region's tracker remembers between scans, as plain
numbers and JSON-ready dicts, so checkpoint.py can store it without pickle.
checkpoint.py imports this module and nothing else of the MHT.

A track tree holds leaves; a leaf is one hypothesis about the track's history
inside the open window: one `Entry` per open scan, saying what the track did
in that scan, plus the track's Kalman filter, intensity filter and width after
those decisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Entry kinds (one per scan per leaf).
DETECTED = "D"  # the track alone explains one spot
OVERLAP = "O"  # the track shares one spot with partners (group = index in the scan's groups)
MISSED = "M"
UNUSABLE = "U"  # the scan's data were unusable: predicted through, not a miss
DEAD = "X"
FRAGMENTS = "F"  # one track, two spots (detection split it): spot and group = the two spots
KINDS = (DETECTED, OVERLAP, MISSED, UNUSABLE, DEAD, FRAGMENTS)  # order is the checkpoint's code
SOLO_KINDS = (DETECTED, FRAGMENTS)  # the track's own spot, unshared
CLAIMING = frozenset((DETECTED, FRAGMENTS, OVERLAP))  # the kinds that take spots (claims)

# The solo-detection count only needs to pass overlap_min_detections: saturating
# it keeps checkpoints of long-lived tracks identical from scan to scan.
SOLO_CAP = 1000

SpotKey = tuple[int, int]  # (scan, spot index in that scan)
EventKey = tuple[int, int]  # (scan, overlap group index in that scan's record)


@dataclass(slots=True)
class Entry:
    """One scan of one hypothesis: what the track did and where it was."""

    scan: int
    kind: str
    spot: int  # spot index in that scan, -1 when none
    group: int  # overlap group index in that scan's record (second spot for F), -1 when none
    pos: tuple[float, float, float]  # the row's position (see TrackRow)
    score: float

    def key(self) -> tuple[str, int, int]:
        return (self.kind, self.spot, self.group)


def claims(e: Entry) -> tuple[tuple[SpotKey, EventKey | None], ...]:
    """The spots an entry uses, each with the overlap event that may share it.

    The one answer to "which spots does this entry take": a detection takes
    its spot, fragments take both pieces, an overlap takes its spot on behalf
    of its group (every member of that group may hold the same spot, nobody
    else may). Missed, unusable and dead entries take nothing.
    """
    if e.kind == DETECTED:
        return (((e.scan, e.spot), None),)
    if e.kind == FRAGMENTS:
        return (((e.scan, e.spot), None), ((e.scan, e.group), None))
    if e.kind == OVERLAP:
        return (((e.scan, e.spot), (e.scan, e.group)),)
    return ()


@dataclass(slots=True)
class Leaf:
    """A hypothesis about one track's open history, with its own filter."""

    x: np.ndarray  # (6,)
    p: np.ndarray  # (6, 6)
    intensity: float
    intensity_var: float  # variance of log(intensity)
    misses: int
    dead: bool
    incumbent: bool  # on the path of the last chosen leaf (kept for feasibility)
    score: float  # sum of the open entries' scores
    history: list[Entry]
    width: np.ndarray  # (3, 3) the track's spot covariance, from its solo detections
    solo: int = 0  # solo detections (D, F) so far, saturating at SOLO_CAP

    def child(
        self,
        x: np.ndarray,
        pcov: np.ndarray,
        intensity: float,
        intensity_var: float,
        misses: int,
        dead: bool,
        entry: Entry,
        keep_incumbent: bool = False,
        width: np.ndarray | None = None,
    ) -> Leaf:
        """This hypothesis extended by one scan's entry, with the filters after it.

        x and pcov are float arrays that the child keeps as they are (no copy):
        filters are never changed in place, a step makes new arrays. Called for
        every hypothesis of every scan, so it stays a plain positional
        construction.
        """
        solo = self.solo + 1 if entry.kind in SOLO_KINDS else self.solo
        return Leaf(
            x,
            pcov,
            float(intensity),
            float(intensity_var),
            misses,
            dead,
            self.incumbent and keep_incumbent,
            self.score + entry.score,
            [*self.history, entry],
            self.width if width is None else width,
            solo if solo < SOLO_CAP else SOLO_CAP,
        )

    def dead_child(self, scan: int) -> Leaf:
        """A dead track stays dead: the same filters, one more (free) entry."""
        entry = Entry(scan, DEAD, -1, -1, pos3(self.x), 0.0)
        return Leaf(
            self.x,
            self.p,
            self.intensity,
            self.intensity_var,
            self.misses,
            True,
            self.incumbent,
            self.score,
            [*self.history, entry],
            self.width,
            self.solo,
        )


@dataclass(slots=True)
class Tree:
    """All hypotheses about one track (one birth)."""

    uid: int  # internal, never reused
    birth_scan: int
    birth_spot: int
    public_id: int  # 0 until the track first appears in a result
    confirmed: bool  # its birth is final: some leaf must be chosen
    leaves: list[Leaf]


def _no_centres() -> np.ndarray:
    return np.zeros((0, 3))


def _no_covariances() -> np.ndarray:
    return np.zeros((0, 3, 3))


def _no_intensities() -> np.ndarray:
    return np.zeros(0)


@dataclass
class ScanRecord:
    """What the open window remembers of a scan: its spots and overlap groups.

    features: each spot's JSON features (the rows' payload).
    centres, covariances, intensities: each spot's measurement, (n, 3),
        (n, 3, 3), (n,), for hypotheses that revisit an open scan (a split
        deblends the blobs its track explained).
    groups: overlap groups (spot, member tree uids).
    """

    scan: int
    usable: bool
    features: list[dict[str, Any]]
    groups: list[tuple[int, tuple[int, ...]]]
    centres: np.ndarray = field(default_factory=_no_centres)
    covariances: np.ndarray = field(default_factory=_no_covariances)
    intensities: np.ndarray = field(default_factory=_no_intensities)


@dataclass
class MHTState:
    """The full, serialisable tracker state of one region.

    voxels: the region volume's size (None until a step gives it).
    clutter: estimated false spots per voxel per scan, from the spots the
        final decisions left unexplained (None until a scan is final).
    """

    last_scan: int | None = None
    next_uid: int = 1
    next_public_id: int = 1
    window: list[ScanRecord] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)
    voxels: int | None = None
    clutter: float | None = None

    def groups_by_scan(self) -> dict[int, list[tuple[int, tuple[int, ...]]]]:
        """Each open scan's overlap groups, to resolve an entry's (scan, group)."""
        return {rec.scan: rec.groups for rec in self.window}


Choice = dict[int, "Leaf | None"]  # tree uid -> chosen leaf (None: tentative tree dropped)


def pos3(v: np.ndarray) -> tuple[float, float, float]:
    """A position vector as the plain float triple entries store."""
    return (float(v[0]), float(v[1]), float(v[2]))
