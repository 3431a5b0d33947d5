"""Overlap hypotheses: two or three tracks explain one spot together (``O``).

Only groups whose members all sit inside the spot (the member gate) and whose
summed intensity matches the spot's are enumerated. Members keep their own
filters with a weak update towards the blob, which is what lets a group split
again with identities restored: after the overlap each member simply persists
on its own spot again. For a pair, the blob's spread beyond the members' own
widths also says how far apart they are (`deblend_pairs`), a real measurement
of each member's centre.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from mpitrack.track import kalman
from mpitrack.track.mht.bundle import Measurements
from mpitrack.track.mht.gating import Gating
from mpitrack.track.mht.generate import Children, ScanContext
from mpitrack.track.mht.state import OVERLAP, Entry, Leaf, pos3

# Leaves per tree tried as a group's representative: the group's members must
# add up in intensity for at least one combination of these.
REPRESENTATIVE_LEAVES = 4
# Deblending a pair (see deblend_pairs): member-position noise, x mean width ...
DEBLEND_WIDTH_NOISE = 0.5
# ... plus this x (separation)^2 along the pair's axis.
DEBLEND_DISTANCE_NOISE = 0.1
# The predicted separation must cover this share of the measured one to trust its sign.
DEBLEND_SIGN_SHARE = 0.5

_Job = tuple[int, list[int], int, int, int]  # (leaf, partner leaves, spot, group, group size)


@dataclass(frozen=True)
class OverlapHypotheses:
    """Children for groups of tracks that share one spot (indexed by live leaf).

    A member needs ``min_detections`` solo detections (see MHTParams); a
    young (tentative) track joins only from the hypothesis chosen last scan:
    a track the tracker does not yet believe in cannot share a spot.
    """

    max_overlap: int
    min_detections: int
    intensity_tolerance: float
    max_candidates: int

    def children(self, ctx: ScanContext) -> Children:
        if self.max_overlap < 2 or ctx.gating is None or ctx.meas is None:
            return {}
        jobs = self._groups(ctx, ctx.gating, ctx.meas)
        if not jobs:
            return {}
        return self._children(ctx, ctx.meas, jobs)

    def _groups(self, ctx: ScanContext, gating: Gating, meas: Measurements) -> list[_Job]:
        """Enumerate the groups (recorded in the scan's record) and each member leaf's job."""
        live, record = ctx.pred.live, ctx.record
        member, d2b = gating.member, gating.member_d2
        inten = meas.intensity
        mine = ctx.pred.intensity.tolist()  # each live leaf's intensity and score
        score = [lf.score for _, lf in live]
        jobs: list[_Job] = []
        eligible = np.array(
            [lf.solo >= self.min_detections and (t.confirmed or lf.incumbent) for t, lf in live],
            dtype=bool,
        )
        member = member & eligible[:, None]
        for j in np.flatnonzero(member.sum(axis=0) >= 2).tolist():  # spots two leaves may share
            by_tree: dict[int, list[int]] = {}
            for i in np.flatnonzero(member[:, j]).tolist():
                by_tree.setdefault(live[i][0].uid, []).append(i)
            if len(by_tree) < 2:
                continue
            # representative leaf per tree: its best-scoring member leaf
            reps = {u: max(idx, key=lambda i: (score[i], -i)) for u, idx in by_tree.items()}
            cands = sorted(by_tree, key=lambda u: (float(d2b[reps[u], j]), u))
            cands = sorted(cands[: self.max_candidates])
            tol, measured = self.intensity_tolerance, float(inten[j])

            def fits(total: float, measured: float = measured, tol: float = tol) -> bool:
                return abs(measured - total) <= tol * total

            top = {
                u: sorted(by_tree[u], key=lambda i: (-score[i], i))[:REPRESENTATIVE_LEAVES]
                for u in by_tree
            }
            for k in range(2, min(self.max_overlap, len(cands)) + 1):
                for combo in itertools.combinations(cands, k):
                    # representatives: the best-scoring leaves whose intensities add up
                    best: tuple[int, ...] | None = None
                    best_score = -math.inf
                    for assign in itertools.product(*(top[u] for u in combo)):
                        total = sum(map(mine.__getitem__, assign))
                        if abs(measured - total) <= tol * total:  # fits(total), inlined: hot
                            sc = sum(map(score.__getitem__, assign))
                            if sc > best_score:
                                best, best_score = assign, sc
                    if best is None:
                        continue
                    g = len(record.groups)
                    record.groups.append((j, tuple(combo)))
                    for a, u in enumerate(combo):
                        others = [best[o] for o in range(k) if o != a]
                        rest = sum(mine[i] for i in others)
                        for i in by_tree[u]:
                            if fits(mine[i] + rest):
                                jobs.append((i, others, j, g, k))
        return jobs

    def _children(self, ctx: ScanContext, meas: Measurements, jobs: list[_Job]) -> Children:
        """All overlap children at once: weights, group centre, group spread."""
        live, vpred = ctx.pred.live, ctx.pred.intensity_var
        xp, pp = ctx.pred.x, ctx.pred.p
        z, inten, ivar, r, cov = meas.z, meas.intensity, meas.intensity_var, meas.noise, meas.cov
        nj = len(jobs)
        idx = np.zeros((nj, 3), dtype=np.intp)
        w = np.zeros((nj, 3))
        wvar = np.zeros(nj)
        for q, (i, others, _, _, _) in enumerate(jobs):
            members = [i, *others]
            idx[q, : len(members)] = members
            w[q, : len(members)] = ctx.pred.intensity[members]
        total = w.sum(axis=1)
        w = w / total[:, None]
        for q, (i, others, _, _, _) in enumerate(jobs):
            wvar[q] = sum(w[q, a] ** 2 * vpred[m] for a, m in enumerate([i, *others]))
        jj = np.array([job[2] for job in jobs], dtype=np.intp)
        centre = np.einsum("qa,qai->qi", w, xp[idx, :3])
        # the group centre's uncertainty: members that share blobs are updated by
        # the same measurements, so their errors are not independent; sum_a
        # w_a P_a (fully correlated) rather than sum_a w_a^2 P_a, which would
        # make a persistent overlap look more certain than one track on the blob
        spread = w[:, :, None, None] * pp[idx, :3, :3]  # (J, 3, 3, 3)
        ll = kalman.loglik_many(z[jj] - centre, r[jj] + spread.sum(axis=1))
        # each member sits somewhere inside the blob: an update towards its centre
        # whose noise is the blob's spread beyond the member's own width (plus
        # half that width, measured on the sim: tighter loses crossings, looser
        # lets long merges drift apart), so members that stay merged lose their
        # relative velocity and members just passing keep most of it
        own = idx[:, 0]
        widths = ctx.pred.width[idx[:, 0]]
        offset = cov[jj] - widths  # where inside the blob the member may sit
        evals, evecs = np.linalg.eigh(0.5 * (offset + np.swapaxes(offset, 1, 2)))
        offset = (evecs * np.maximum(evals, 0.0)[:, None, :]) @ np.swapaxes(evecs, 1, 2)
        zm = z[jj].copy()
        rm = r[jj] + offset + 0.5 * widths
        pairs = np.array([job[4] == 2 for job in jobs])
        if pairs.any():
            at = np.flatnonzero(pairs)
            own_w, other_w = ctx.pred.width[idx[at, 0]], ctx.pred.width[idx[at, 1]]
            predicted = xp[idx[at, 0], :3] - xp[idx[at, 1], :3]
            dz, dr, sure = deblend_pairs(
                w[at, :2], own_w, other_w, predicted, z[jj[at]], r[jj[at]], cov[jj[at]]
            )
            zm[at[sure]], rm[at[sure]] = dz[sure], dr[sure]
        xn, pn = kalman.update_many(xp[own], pp[own], zm, rm)
        sc = ctx.scores
        out: Children = {}
        for q, (i, _, j, g, k) in enumerate(jobs):
            joint = (
                -sc.log_clutter
                + float(ll[q])
                + sc.intensity(float(inten[j]), float(total[q]), float(ivar[j]) + float(wvar[q]))
            )
            score = sc.log_pd + sc.log_overlap + joint / k
            entry = Entry(ctx.scan, OVERLAP, j, g, pos3(xn[q]), score)
            leaf: Leaf = live[i][1]
            out.setdefault(i, []).append(
                leaf.child(xn[q], pn[q], leaf.intensity, vpred[i], 0, False, entry)
            )
        return out


def deblend_pairs(
    w: np.ndarray,
    own: np.ndarray,
    other: np.ndarray,
    predicted: np.ndarray,
    z: np.ndarray,
    r: np.ndarray,
    cov: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each member of a two-track blob sits, from the blob's centroid and spread.

    A blob of two spots with intensity fractions w1, w2, widths C1, C2 and
    centres d apart has centroid w1 x1 + w2 x2 and covariance
    w1 C1 + w2 C2 + w1 w2 d d^T. The excess spread over the members' own
    widths therefore measures |d| along its main axis (the sign comes from
    the prediction), and member 1 sits at z + w2 d: a real measurement of
    each member's centre, so tracks crossing inside one blob keep moving
    at their own pace, and members that sit on each other (no excess
    spread) are pulled to the blob's centre.

    Rows are (member, partner) pairs: w (Q, 2) intensity fractions, own and
    other (Q, 3, 3) their widths, predicted (Q, 3) the member's predicted
    centre minus the partner's, z, r, cov (Q, ...) the blob's centre, noise
    and covariance. Returns the members' position measurements, their noise,
    and whether the prediction tells the sign of d (see below).
    """
    w1, w2 = w[:, 0], w[:, 1]
    excess = cov - w1[:, None, None] * own - w2[:, None, None] * other
    excess = 0.5 * (excess + np.swapaxes(excess, 1, 2))
    evals, evecs = np.linalg.eigh(excess)
    lam = np.maximum(evals[:, -1], 0.0)
    axis = evecs[:, :, -1]
    dist = np.sqrt(lam / np.maximum(w1 * w2, 1e-6))
    sign = np.where(np.einsum("qi,qi->q", predicted, axis) >= 0.0, 1.0, -1.0)
    d = (sign * dist)[:, None] * axis
    zm = z + w2[:, None] * d
    # a sign the prediction cannot tell (members predicted on top of each
    # other while the blob stretches: a merged pair starting to split) is
    # not guessed: the loose update towards the blob's centre is kept and
    # the next solo detections (intensity) decide who went where
    sure = np.abs(np.einsum("qi,qi->q", predicted, axis)) >= DEBLEND_SIGN_SHARE * dist
    # the spread estimate is rough: its error grows with the partner's share
    # and with the members' widths (a blob's second moment is noisy)
    scale = (w2**2)[:, None, None]
    rm = r + scale * (DEBLEND_WIDTH_NOISE * 0.5 * (own + other))
    rm = rm + scale * (DEBLEND_DISTANCE_NOISE * dist**2)[:, None, None] * (
        axis[:, :, None] * axis[:, None, :]
    )
    return zm, rm, sure
