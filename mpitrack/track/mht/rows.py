"""Row output: the chosen hypothesis as one `TrackRow` per live track per open scan.

Tracks get their public ids here, in order of birth, the first time they
appear in a result. A detected row carries the measured spot's features with
``position`` set to the track's estimate; a fragments row sums the two
pieces' intensities; an overlap row keeps the shared spot's centre as
``measured_position`` and names its partners in ``overlap_with``; a missed
row is the prediction (``predicted: true``). The ``overlapping`` flag is a
distance rule, see `RowWriter.unresolved`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpitrack.track.mht.state import (
    DEAD,
    DETECTED,
    FRAGMENTS,
    MISSED,
    OVERLAP,
    UNUSABLE,
    Choice,
    Entry,
    MHTState,
    Tree,
)
from mpitrack.track.result import TrackRow


@dataclass(frozen=True)
class RowWriter:
    """Rows of the open window under the chosen hypothesis.

    axes: names of the two frame axes (``position`` is keyed omega, *axes).
    overlap_distance: see `unresolved`.
    """

    axes: tuple[str, str]
    overlap_distance: float

    def _posdict(self, pos: tuple[float, float, float]) -> dict[str, float]:
        return {"omega": pos[0], self.axes[0]: pos[1], self.axes[1]: pos[2]}

    def rows(self, state: MHTState, chosen: Choice) -> list[TrackRow]:
        shown: list[tuple[Tree, list[Entry]]] = []
        sigmas: dict[int, np.ndarray] = {}
        for tree in state.trees:
            leaf = chosen.get(tree.uid)
            if leaf is None:
                continue
            entries = [e for e in leaf.history if e.kind != DEAD]
            if leaf.dead:  # a track that died: withdraw its trailing predictions
                while entries and entries[-1].kind in (MISSED, UNUSABLE):
                    entries.pop()
            if entries:
                shown.append((tree, entries))
                sigmas[tree.uid] = np.sqrt(np.maximum(np.diag(leaf.width), 0.0))
        unresolved = self.unresolved(shown, sigmas)
        for tree, _ in sorted(
            shown, key=lambda te: (te[0].birth_scan, te[0].birth_spot, te[0].uid)
        ):
            if tree.public_id == 0:
                tree.public_id = state.next_public_id
                state.next_public_id += 1
        by_uid = {t.uid: t for t in state.trees}
        records = {rec.scan: rec for rec in state.window}
        rows: list[TrackRow] = []
        for tree, entries in shown:
            for e in entries:
                rec = records[e.scan]
                flagged = (tree.uid, e.scan) in unresolved
                if e.kind == DETECTED:
                    feats = dict(rec.features[e.spot])
                    feats["position"] = self._posdict(e.pos)
                elif e.kind == FRAGMENTS:  # the brighter fragment's features, summed intensity
                    feats = dict(rec.features[e.spot])
                    feats["position"] = self._posdict(e.pos)
                    a, b = rec.features[e.spot], rec.features[e.group]
                    if isinstance(a.get("intensity"), float) and isinstance(
                        b.get("intensity"), float
                    ):
                        feats["intensity"] = a["intensity"] + b["intensity"]
                    feats["fragments"] = 2
                elif e.kind == OVERLAP:
                    feats = dict(rec.features[e.spot])
                    if "position" in feats:
                        feats["measured_position"] = feats["position"]
                    feats["position"] = self._posdict(e.pos)
                    feats["overlap_with"] = sorted(
                        by_uid[u].public_id for u in rec.groups[e.group][1] if u != tree.uid
                    )
                else:
                    feats = {"position": self._posdict(e.pos), "predicted": True}
                    if e.kind == UNUSABLE:
                        feats["unusable_scan"] = True
                    rows.append(TrackRow(tree.public_id, e.scan, False, False, feats))
                    continue
                rows.append(TrackRow(tree.public_id, e.scan, True, flagged, feats))
        rows.sort(key=lambda row: (row.scan, row.track_id))
        return rows

    def unresolved(
        self, shown: list[tuple[Tree, list[Entry]]], sigmas: dict[int, np.ndarray]
    ) -> set[tuple[int, int]]:
        """(tree uid, scan) of tracks whose centre lies within the resolution limit of another's.

        The ``overlapping`` flag: two tracks whose estimated centres are closer
        than ``overlap_distance`` in units of their summed widths
        (``||(c_i - c_j) / (sigma_i + sigma_j)||``, sigmas from the tracks'
        solo spot covariances) cannot be told apart by detection (the Sparrow
        limit), whether detection happened to return one spot (an overlap
        hypothesis) or two. A shared spot alone is not enough: a faint
        neighbour on the flank of a bright spot may merge into its blob while
        both centres stay resolvable (``overlap_with`` still names the sharers).
        """
        by_scan: dict[int, list[tuple[int, tuple[float, float, float]]]] = {}
        for tree, entries in shown:
            for e in entries:
                if e.kind in (DETECTED, OVERLAP, FRAGMENTS):
                    by_scan.setdefault(e.scan, []).append((tree.uid, e.pos))
        out: set[tuple[int, int]] = set()
        for scan, items in by_scan.items():
            if len(items) < 2:
                continue
            uids = [u for u, _ in items]
            pos = np.array([p for _, p in items])
            sig = np.stack([sigmas[u] for u in uids])
            scale = np.maximum(sig[:, None, :] + sig[None, :, :], 1e-6)
            dist = np.linalg.norm((pos[:, None, :] - pos[None, :, :]) / scale, axis=2)
            close = dist < self.overlap_distance
            np.fill_diagonal(close, False)
            out.update((uids[a], scan) for a in np.flatnonzero(close.any(axis=1)))
        return out
