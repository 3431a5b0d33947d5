"""Split hypotheses: a track whose spot separates in two was two tracks sharing one spot.

Two spots that overlap from their first scan, or that merged before either
was seen apart, are one blob and start one track. When the blob separates
into two spots whose intensities add up to the track's and that lie further
apart than pieces of the track's own spot could (``fragment_gate`` of its
widths: closer, they are fragments), the better answer is that a second
track was inside the blob all along: the track keeps one spot, a new track
takes the other, and inside the open window the scans in which the track
explained the blob alone are revised into an overlap of the two (scans in
which it explained two pieces as fragments give one piece to each; scans
before the window are final). Without this a split shows as a birth, and in
the newest scan of a run there are no later scans to revise it.

Score of the split against "the track keeps one spot, the other is a birth":
the track's prediction is compared with the two spots' intensity-weighted
centre (what it tracked) and their summed intensity (what it measured), as
for fragments; the new track pays a birth and its detection's ``log Pd``;
each revised scan pays ``log Pd + 2 log(overlap probability)``. Back in the
revised scans each member's centre is deblended from the blob's spread with
the widths and separation the split shows (overlap.py's `deblend_pairs`).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from mpitrack.track import kalman
from mpitrack.track.mht.bundle import (
    Measurements,
    leaf_on_spot,
    reserve_uid,
    separation_in_widths,
    start_tree,
)
from mpitrack.track.mht.generate import ScanContext
from mpitrack.track.mht.overlap import deblend_pairs
from mpitrack.track.mht.state import (
    DETECTED,
    FRAGMENTS,
    OVERLAP,
    Entry,
    Leaf,
    MHTState,
    ScanRecord,
    Tree,
    pos3,
)

# Spot pairs tried per track: the nearest to its prediction.
MAX_PAIRS = 3


@dataclass(frozen=True)
class SplitHypotheses:
    """Splits of the tracks whose last chosen hypothesis explained a blob alone."""

    intensity_tolerance: float
    fragment_gate: float
    initial_velocity_std: float

    def start(self, ctx: ScanContext, state: MHTState) -> None:
        """Add each split: a leaf to the splitting track's tree and a new tentative tree."""
        if ctx.gating is None or ctx.meas is None:
            return
        meas = ctx.meas
        records = {rec.scan: rec for rec in state.window}
        two_spots = ctx.gating.member.sum(axis=1) >= 2  # a split needs a pair to split into
        for i, (tree, leaf) in enumerate(ctx.pred.live):
            if not leaf.incumbent or not two_spots[i]:
                continue  # one parent per tree: the chosen hypothesis of the last scan
            run = _blob_run(leaf)
            if not run:
                continue
            spots = np.flatnonzero(ctx.gating.member[i])
            order = np.argsort(ctx.gating.member_d2[i, spots], kind="stable")
            near = sorted(spots[order].tolist()[: MAX_PAIRS + 1])
            tried = 0
            for a, b in itertools.combinations(near, 2):
                total = float(meas.intensity[a] + meas.intensity[b])
                miss = abs(total - leaf.intensity)
                if miss > self.intensity_tolerance * leaf.intensity:
                    continue
                if miss >= abs(float(max(meas.intensity[a], meas.intensity[b])) - leaf.intensity):
                    continue  # the brighter spot alone has the track's intensity: no split
                apart = separation_in_widths((meas.z[a] - meas.z[b])[None], leaf.width[None])
                if apart[0] <= self.fragment_gate:
                    continue  # pieces of the track's own spot: fragments, not a split
                if meas.intensity[b] > meas.intensity[a]:
                    a, b = b, a  # the track keeps the brighter spot
                self._split(ctx, state, records, i, tree, leaf, run, a, b)
                tried += 1
                if tried == MAX_PAIRS:
                    break

    def _split(
        self,
        ctx: ScanContext,
        state: MHTState,
        records: dict[int, ScanRecord],
        i: int,
        tree: Tree,
        leaf: Leaf,
        run: list[Entry],
        a: int,
        b: int,
    ) -> None:
        meas = ctx.meas
        assert meas is not None
        sc, scan = ctx.scores, ctx.scan
        xp, pp, vpred = ctx.pred.x[i], ctx.pred.p[i], ctx.pred.intensity_var[i]
        total = float(meas.intensity[a] + meas.intensity[b])
        wa, wb = float(meas.intensity[a]) / total, float(meas.intensity[b]) / total
        centre = wa * meas.z[a] + wb * meas.z[b]
        rc = wa**2 * meas.noise[a] + wb**2 * meas.noise[b]
        ll = kalman.gaussian_loglik(centre - xp[:3], pp[:3, :3] + rc)
        s_int = vpred + wa**2 * float(meas.intensity_var[a]) + wb**2 * float(meas.intensity_var[b])
        kept = sc.log_pd - sc.log_clutter + ll + sc.intensity(total, leaf.intensity, s_int)
        new = sc.log_pd + sc.birth
        partner_uid = reserve_uid(state)
        mine: list[Entry] = []
        theirs: list[Entry] = []
        blobs = [e for e in run if e.kind != FRAGMENTS]
        inside = iter(_deblended(records, blobs, meas, a, b, wa, wb))
        for e in run:
            rec = records[e.scan]
            if e.kind == FRAGMENTS:  # each takes the piece on its side of the split
                one, two = e.spot, e.group
                if float((rec.centres[one] - rec.centres[two]) @ (meas.z[a] - meas.z[b])) < 0:
                    one, two = two, one
                fragment = sc.log_fragment if sc.log_fragment is not None else 0.0
                mine.append(
                    Entry(e.scan, DETECTED, one, -1, pos3(rec.centres[one]), e.score - fragment)
                )
                theirs.append(Entry(e.scan, DETECTED, two, -1, pos3(rec.centres[two]), sc.log_pd))
                continue
            g = len(rec.groups)
            rec.groups.append((e.spot, (tree.uid, partner_uid)))
            share = sc.log_pd + sc.log_overlap + (e.score - sc.log_pd) / 2.0
            pa, pb = next(inside)
            mine.append(Entry(e.scan, OVERLAP, e.spot, g, pa, share))
            theirs.append(Entry(e.scan, OVERLAP, e.spot, g, pb, share))
        mine.append(Entry(scan, DETECTED, a, -1, pos3(meas.z[a]), kept))
        theirs.append(Entry(scan, DETECTED, b, -1, pos3(meas.z[b]), new))
        xa, pa_cov = kalman.update(xp, pp, meas.z[a], meas.noise[a])
        history = leaf.history[: len(leaf.history) - len(run)] + mine
        score = leaf.score - sum(e.score for e in run) + sum(e.score for e in mine)
        tree.leaves.append(leaf_on_spot(xa, pa_cov, meas, a, score, history, leaf.solo + 1))
        xb, pb_cov = kalman.initial_state(meas.z[b], meas.noise[b], self.initial_velocity_std)
        xb[3:] = xp[3:]  # it moved with the blob until now
        partner = leaf_on_spot(xb, pb_cov, meas, b, sum(e.score for e in theirs), theirs, 1)
        start_tree(state, partner_uid, theirs[0].scan, theirs[0].spot, partner)


def _blob_run(leaf: Leaf) -> list[Entry]:
    """The leaf's latest entries in which it explained its spot(s) alone (oldest first)."""
    run: list[Entry] = []
    for e in reversed(leaf.history):
        if e.kind not in (DETECTED, FRAGMENTS):
            break
        run.append(e)
    return run[::-1]


def _deblended(
    records: dict[int, ScanRecord],
    blobs: list[Entry],
    meas: Measurements,
    a: int,
    b: int,
    wa: float,
    wb: float,
) -> list[tuple[tuple[float, float, float], tuple[float, float, float]]]:
    """Both members' centres inside each earlier blob, from its spread and the split's widths.

    One `deblend_pairs` call for every blob and both members (rows: blob 0
    member a, blob 0 member b, blob 1 member a, ...).
    """
    if not blobs:
        return []
    q = len(blobs)
    z = np.repeat(np.stack([records[e.scan].centres[e.spot] for e in blobs]), 2, axis=0)
    cov = np.repeat(np.stack([records[e.scan].covariances[e.spot] for e in blobs]), 2, axis=0)
    sep = np.tile(np.stack([meas.z[a] - meas.z[b], meas.z[b] - meas.z[a]]), (q, 1))
    w = np.tile(np.array([[wa, wb], [wb, wa]]), (q, 1))
    own = np.tile(meas.cov[[a, b]], (q, 1, 1))
    other = np.tile(meas.cov[[b, a]], (q, 1, 1))
    centres, _, sure = deblend_pairs(w, own, other, sep, z, np.zeros((2 * q, 3, 3)), cov)
    out = []
    for k, e in enumerate(blobs):
        za, zb = centres[2 * k], centres[2 * k + 1]
        if not (sure[2 * k] and sure[2 * k + 1]) or not math.isfinite(float(za.sum() + zb.sum())):
            out.append((pos3(np.asarray(e.pos)), pos3(np.asarray(e.pos))))
        else:
            out.append((pos3(za), pos3(zb)))
    return out
