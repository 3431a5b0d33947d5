"""Hypothesis generation: the children of every live leaf for one scan, and births.

Each kind of hypothesis is one small class holding only its own parameters,
all with the same interface, ``children(context) -> {live index: [child
leaves]}``, over one bundle of predictions and measurements (bundle.py):

- `MissHypotheses`: a missed detection (``M``); the ``max_misses``-th
  consecutive miss is death (``X``); in an unusable scan the track is
  predicted through instead (``U``);
- `PersistHypotheses`: the track explains one gated spot alone (``D``);
- `OverlapHypotheses` (overlap.py): two or three tracks share one spot (``O``);
- `FragmentHypotheses`: one track explains two adjacent spots whose
  intensities add up to its own: detection split its spot (``F``).

`BirthHypotheses` starts a tentative tree on every spot. A leaf's children
are listed in the order of the generators (miss first), which the solver's
tie-breaking relies on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mpitrack.track import kalman
from mpitrack.track.mht.bundle import (
    Measurements,
    Predictions,
    leaf_on_spot,
    reserve_uid,
    separation_in_widths,
    start_tree,
)
from mpitrack.track.mht.gating import Gating
from mpitrack.track.mht.scoring import ScoreModel
from mpitrack.track.mht.state import (
    DEAD,
    DETECTED,
    FRAGMENTS,
    MISSED,
    UNUSABLE,
    Entry,
    Leaf,
    MHTState,
    ScanRecord,
    pos3,
)


@dataclass(frozen=True)
class ScanContext:
    """What a generator sees of one scan.

    meas: None when the scan's data were unusable.
    gating: None when there is nothing to gate (no spots or no live leaf).
    record: the scan's record; overlap groups are added to it.
    scores: the score terms for this scan (the clutter density is estimated
        as the run goes, see core.py).
    """

    scan: int
    pred: Predictions
    meas: Measurements | None
    gating: Gating | None
    record: ScanRecord
    scores: ScoreModel


Children = dict[int, list[Leaf]]  # live leaf index -> its children of one kind


class HypothesisGenerator(Protocol):
    def children(self, ctx: ScanContext) -> Children: ...


@dataclass(frozen=True)
class MissHypotheses:
    """Every live leaf may have been missed; the last allowed miss is its death."""

    max_misses: int

    def children(self, ctx: ScanContext) -> Children:
        out: Children = {}
        xp, pp, vpred = ctx.pred.x, ctx.pred.p, ctx.pred.intensity_var
        centres = [tuple(c) for c in xp[:, :3].tolist()]  # as pos3 gives them
        miss, death = ctx.scores.miss(False), ctx.scores.miss(True)
        for i, (_, leaf) in enumerate(ctx.pred.live):
            if ctx.meas is None:  # unusable scan: predicted through, not a miss
                entry = Entry(ctx.scan, UNUSABLE, -1, -1, centres[i], 0.0)
                misses, dead = leaf.misses, False
            else:
                misses = leaf.misses + 1
                dead = misses >= self.max_misses
                entry = Entry(
                    ctx.scan, DEAD if dead else MISSED, -1, -1, centres[i], death if dead else miss
                )
            out[i] = [
                leaf.child(
                    xp[i], pp[i], leaf.intensity, vpred[i], misses, dead, entry, keep_incumbent=True
                )
            ]
        return out


@dataclass(frozen=True)
class PersistHypotheses:
    """A track explains one gated spot alone: Kalman, intensity and width updates."""

    width_smoothing: float

    def children(self, ctx: ScanContext) -> Children:
        out: Children = {}
        if ctx.gating is None or ctx.meas is None:
            return out
        pred, meas, sc = ctx.pred, ctx.meas, ctx.scores
        gi, gj = np.nonzero(ctx.gating.solo)  # row-major: per leaf, spots in order
        if not gi.size:
            return out
        xn_all, pn_all = kalman.update_many(pred.x[gi], pred.p[gi], meas.z[gj], meas.noise[gj])
        # every pair's score and intensity update at once
        mine = pred.intensity[gi]
        vp = np.asarray(pred.intensity_var)[gi]
        s_int = vp + meas.intensity_var[gj]
        ratio = np.log(np.maximum(meas.intensity[gj], 1e-12) / mine)
        scores = (
            sc.log_pd
            + ctx.gating.loglik[gi, gj]
            - sc.log_clutter
            + sc.intensity_many(meas.intensity[gj], mine, s_int)
        )
        gain = vp / s_int  # scalar Kalman update of log intensity
        new_int = mine * np.exp(gain * ratio)
        ws = self.width_smoothing
        widths = (1.0 - ws) * pred.width[gi] + ws * meas.cov[gj]
        centres = [tuple(c) for c in meas.z.tolist()]  # as pos3 gives them
        live = pred.live
        for g, (i, j, score, intensity, var) in enumerate(
            zip(
                gi.tolist(),
                gj.tolist(),
                scores.tolist(),
                new_int.tolist(),
                ((1.0 - gain) * vp).tolist(),
                strict=True,
            )
        ):
            entry = Entry(ctx.scan, DETECTED, j, -1, centres[j], score)
            out.setdefault(i, []).append(
                live[i][1].child(
                    xn_all[g], pn_all[g], intensity, var, 0, False, entry, width=widths[g]
                )
            )
        return out


@dataclass(frozen=True)
class FragmentHypotheses:
    """One track explains two nearby spots (detection split its spot).

    Only pairs of spots that both sit inside the track's spot (the member
    gate), lie within ``gate`` of the track's own spot widths of each other
    (pieces of one spot; further apart is a split, split.py), and whose
    summed intensity matches the track's (``intensity_tolerance``) are
    considered.
    """

    intensity_tolerance: float
    gate: float
    width_smoothing: float

    def children(self, ctx: ScanContext) -> Children:
        out: Children = {}
        log_fragment = ctx.scores.log_fragment
        if ctx.gating is None or ctx.meas is None or log_fragment is None:
            return out
        pred, meas, sc = ctx.pred, ctx.meas, ctx.scores
        z, inten, cov, r, ivar = meas.z, meas.intensity, meas.cov, meas.noise, meas.intensity_var
        ii, j1, j2 = _member_pairs(ctx.gating.member)
        if not ii.size:
            return out
        mine = pred.intensity[ii]
        widths = pred.width[ii]
        ok = separation_in_widths(z[j1] - z[j2], widths) <= self.gate  # pieces of its spot
        ok &= np.abs(inten[j1] + inten[j2] - mine) <= self.intensity_tolerance * mine
        if not ok.any():
            return out
        ii, j1, j2 = ii[ok], j1[ok], j2[ok]
        # the brighter fragment first: its features describe the row
        swap = inten[j1] < inten[j2]
        j1, j2 = np.where(swap, j2, j1), np.where(swap, j1, j2)
        jobs = list(zip(ii.tolist(), j1.tolist(), j2.tolist(), strict=True))
        tot = inten[j1] + inten[j2]
        w1, w2 = inten[j1] / tot, inten[j2] / tot
        zc = w1[:, None] * z[j1] + w2[:, None] * z[j2]
        rc = (w1**2)[:, None, None] * r[j1] + (w2**2)[:, None, None] * r[j2]
        xp, pp, vpred = pred.x, pred.p, pred.intensity_var
        ll = kalman.loglik_many(zc - xp[ii, :3], pp[ii, :3, :3] + rc)
        apart = kalman.loglik_many(z[j1] - z[j2], cov[j1] + cov[j2] + r[j1] + r[j2])
        xn, pn = kalman.update_many(xp[ii], pp[ii], zc, rc)
        base = sc.log_pd + log_fragment - 2.0 * sc.log_clutter
        ws = self.width_smoothing
        for q, (i, a, b) in enumerate(jobs):
            leaf = pred.leaf(i)
            var_spot = float(w1[q] ** 2 * ivar[a] + w2[q] ** 2 * ivar[b])
            s_int = vpred[i] + var_spot
            score = (
                base
                + float(ll[q])
                + float(apart[q])
                + sc.intensity(float(tot[q]), leaf.intensity, s_int)
            )
            gain = vpred[i] / s_int
            new_int = leaf.intensity * math.exp(gain * math.log(float(tot[q]) / leaf.intensity))
            entry = Entry(ctx.scan, FRAGMENTS, a, b, pos3(zc[q]), score)
            d = z[a] - z[b]
            mix = w1[q] * cov[a] + w2[q] * cov[b] + w1[q] * w2[q] * np.outer(d, d)
            width = (1.0 - ws) * leaf.width + ws * mix
            out.setdefault(i, []).append(
                leaf.child(
                    xn[q], pn[q], new_int, (1.0 - gain) * vpred[i], 0, False, entry, width=width
                )
            )
        return out


def _member_pairs(member: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (leaf i, spot j1, spot j2), j1 < j2 both in i's member gate.

    In the order of a loop over leaves and ``itertools.combinations`` of each
    leaf's spots, built without that loop: it runs for every live leaf of
    every scan.
    """
    rows, spots = np.nonzero(member)  # row-major: per leaf, spots in order
    counts = np.bincount(rows, minlength=member.shape[0])
    empty = np.zeros(0, dtype=np.intp)
    if not rows.size or counts.max() < 2:
        return empty, empty, empty
    first, second = np.triu_indices(int(counts.max()), 1)  # combinations' order
    leaf = np.repeat(np.arange(member.shape[0]), first.size)
    first, second = np.tile(first, member.shape[0]), np.tile(second, member.shape[0])
    ok = second < counts[leaf]
    leaf, first, second = leaf[ok], first[ok], second[ok]
    start = (np.cumsum(counts) - counts)[leaf]
    return leaf, spots[start + first], spots[start + second]


@dataclass(frozen=True)
class BirthHypotheses:
    """Every spot may start a track: a new tentative tree with one leaf.

    The birth counts as the track's first solo detection only when its spot
    is resolved from every other spot of the scan (centres at least
    ``overlap_distance`` summed widths apart) and lies outside every live
    track's spot (its member gate): a piece that detection cut off a spot is no evidence of a track
    that may later share a spot.
    """

    initial_velocity_std: float
    overlap_distance: float

    def clean(self, meas: Measurements, gating: Gating | None) -> np.ndarray:
        """Per spot: resolved from every other spot of its scan and inside no track's spot."""
        sigma = np.sqrt(np.maximum(np.diagonal(meas.cov, axis1=1, axis2=2), 0.0))
        d = (meas.z[:, None, :] - meas.z[None, :, :]) / np.maximum(
            sigma[:, None, :] + sigma[None, :, :], 1e-6
        )
        apart = np.linalg.norm(d, axis=2) >= self.overlap_distance
        np.fill_diagonal(apart, True)
        clean = apart.all(axis=1)
        if gating is not None:
            clean &= ~gating.member.any(axis=0)
        return clean

    def start(self, ctx: ScanContext, meas: Measurements, state: MHTState) -> None:
        scan = ctx.scan
        resolved = self.clean(meas, ctx.gating).tolist()
        x0, p0 = kalman.initial_state(meas.z, meas.noise, self.initial_velocity_std)
        centres = [tuple(c) for c in meas.z.tolist()]  # as pos3 gives them
        for j in range(meas.n):
            entry = Entry(scan, DETECTED, j, -1, centres[j], ctx.scores.birth)
            birth = leaf_on_spot(x0[j], p0[j], meas, j, ctx.scores.birth, [entry], int(resolved[j]))
            start_tree(state, reserve_uid(state), scan, j, birth)
