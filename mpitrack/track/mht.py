"""Track-oriented Multiple Hypothesis Tracking with N-scan pruning.

How it works, one scan at a time (see `MHT.step`):

1. Expand. Every track tree holds leaves: hypotheses about the track's
   history inside the open window, each with its own Kalman filter (kalman.py).
   Each live leaf branches into children for this scan:
   - persist: the track explains one gated spot alone (``D``);
   - missed detection (``M``); the ``max_misses``-th consecutive miss is death
     (``X``): a dead leaf emits no more rows;
   - overlap: two or three tracks explain one spot together (``O``); only
     groups whose members all sit inside the spot and whose summed intensity
     matches the spot's are enumerated. Members keep their own filters (a weak
     update towards the blob), which is what lets a group split again with
     identities restored: after the overlap each member simply persists on its
     own spot again (split = persist after O);
   - fragments: one track explains two adjacent spots whose intensities add
     up to its own (``F``): detection split its spot;
   - birth: every spot also starts a new tentative tree;
   - unusable scan (no volume): every track is predicted through it (``U``).
2. Score. Each leaf's score is the sum of log-likelihood ratios of its
   decisions inside the open window against "that spot was clutter":
   persist ``log Pd + log N(z) - log clutter + intensity term`` (intensity is
   a scalar Kalman filter on log intensity, updated by solo detections), miss
   ``log(1 - Pd)``, birth ``log(birth / clutter)``, overlap
   ``k log Pd + log N(z | group centroid) - log clutter + intensity(sum)``
   shared among the k members.
3. Solve. The best global hypothesis picks one leaf per confirmed tree and at
   most one per tentative tree, each spot explained at most once (an overlap
   group counts once), and overlap partners consistent. It is an exact
   integer program (scipy.optimize.milp / HiGHS), solved separately for every
   independent cluster of the gating graph; a cluster whose per-tree best
   leaves are already compatible (always the case for a single tree) is
   optimal without the solver. Clusters that need a search go to an exact
   branch and bound first (HiGHS costs milliseconds per call even for tiny
   programs) and to milp when that exceeds ``bnb_node_limit`` nodes, or always
   with ``solver: milp``.
4. Prune. Leaves far below their tree's best (``leaf_score_margin``) and all
   but the best ``max_leaves`` per tree are dropped (the chosen leaf is always
   kept, and next scan its missed-detection child is kept, which keeps the
   program feasible). Decisions older than ``n_scan`` scans are made final:
   only the descendants of the chosen leaf's oldest node survive.

Everything is deterministic: the same inputs give bit-identical outputs, and
the whole state is plain arrays and JSON (checkpoint.py), never pickle.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from mpitrack.track import kalman
from mpitrack.track.result import StepResult, TrackRow
from mpitrack.track.spot import Spot

log = logging.getLogger(__name__)

# Entry kinds (one per scan per leaf).
DETECTED = "D"
OVERLAP = "O"
MISSED = "M"
UNUSABLE = "U"
DEAD = "X"
FRAGMENTS = "F"  # one track, two spots (detection split it): spot and group = the two spots
KINDS = (DETECTED, OVERLAP, MISSED, UNUSABLE, DEAD, FRAGMENTS)  # order is the checkpoint's code

_MAX_OVERLAP_CANDIDATES = 6  # trees considered per spot when enumerating groups
_REP_LEAVES = 4  # leaves per tree tried as a group's representative
_FRAGMENT_GATE = 6.25  # chi2(3) 90 %: fragments' separation against their summed widths
_WIDTH_SMOOTHING = 0.3  # weight of a new solo detection in a track's width estimate
_INTENSITY_CAP_SIGMA = 4.0  # the intensity term saturates: intensities may jump
_DEBLEND_WIDTH_NOISE = 0.5  # member-position noise of a deblended pair, x mean width
_DEBLEND_DIST_NOISE = 0.1  # ... plus this x (separation)^2 along the pair's axis
_DEBLEND_SIGN_SHARE = 0.5  # predicted share of the measured separation to trust its sign
_SOLO_CAP = 1000  # the solo-detection count only needs to pass overlap_min_detections
_FREE = object()  # marker: spot not yet claimed in the branch and bound


@dataclass(frozen=True)
class MHTParams:
    """MHT settings (the ``tracking:`` section of the config).

    detection_probability: Pd, chance that a live track yields a spot in a scan.
    clutter_density: expected false spots per voxel per scan (lambda_c).
    birth_density: expected new tracks per voxel per scan (lambda_b); a lone
        spot starts a track when birth_density > clutter_density.
    gate_probability: chi-square quantile of the Mahalanobis gate (3 dof).
    n_scan: open window length in scans; decisions older than that are final
        and results inside it may be revised (1 = no revision).
    max_leaves: most hypotheses (leaves) kept per track tree after a scan.
    leaf_score_margin: leaves scoring this many nats below their tree's best
        are dropped before solving.
    max_misses: consecutive missed detections that end a track (death); the
        track emits no row from the scan of its last miss on, and its trailing
        missed rows inside the open window are withdrawn.
    max_overlap: largest number of tracks that may share one spot (2 or 3).
    overlap_intensity_tolerance: a group may share a spot only if
        |I_spot - sum I_tracks| <= tolerance * sum I_tracks.
    intensity_log_sigma: floor of a spot's log-intensity error, combined with
        the spot's own relative ``intensity_error`` when detection reports one.
    overlap_probability: prior that a track near others shares its spot with
        them in a scan (each overlap member pays log of it); keeps a spurious
        track from riding along inside a real spot.
    fragment_probability: prior that detection splits one track's spot in two
        in a scan; the track may then explain both pieces (0 = never).
    intensity_drift: how fast a track's log intensity may wander per scan
        (std); a track's intensity is a scalar Kalman filter in log space,
        updated only by solo detections, so its uncertainty grows while it is
        missed or overlapping.
    overlap_distance: a row is flagged ``overlapping`` when the track's centre
        is closer than this to another track's, in units of their summed
        Gaussian widths (the simulator's definition; 1.0 ~ the Sparrow limit,
        where two spots show a single maximum).
    overlap_min_detections: a track may share a spot only after this many
        solo detections: a noise fragment born beside a real spot would
        otherwise ride along inside it as an "overlap" for ever, its intensity
        plus the real track's adding up to the spot's by construction.
    death_probability: prior that a live track ends in a scan; the death of a
        track (its ``max_misses``-th consecutive miss) pays log of it once.
        Without it, "my partner died and I took the merged spot alone" would
        cost nothing once the misses leave the window, and long merges would
        end in a death instead of an overlap.
    process_noise: white-acceleration variance (voxel^2 / scan^3) of the
        constant-velocity model.
    initial_velocity_std: prior velocity spread of a new track (voxel / scan).
    measurement_noise_floor: smallest centroid standard deviation (voxel).
    measurement_noise_scale: centroid covariance = scale * spot covariance /
        spot intensity + floor^2.
    solver: how clusters that need a search are solved: ``auto`` = exact
        branch and bound in Python, falling back to the integer program when it
        needs more than bnb_node_limit nodes; ``milp`` = always the integer
        program (scipy.optimize.milp / HiGHS). Both are exact.
    bnb_node_limit: search nodes before ``auto`` hands a cluster to HiGHS.
    """

    detection_probability: float = 0.9
    clutter_density: float = 1e-5
    birth_density: float = 1e-4
    gate_probability: float = 0.999
    n_scan: int = 3
    max_leaves: int = 12
    leaf_score_margin: float = 12.0
    max_misses: int = 3
    max_overlap: int = 3
    overlap_intensity_tolerance: float = 0.4
    intensity_log_sigma: float = 0.05
    overlap_probability: float = 0.6
    fragment_probability: float = 0.001
    intensity_drift: float = 0.05
    overlap_distance: float = 1.0
    overlap_min_detections: int = 2
    death_probability: float = 0.01
    process_noise: float = 0.2
    initial_velocity_std: float = 1.5
    measurement_noise_floor: float = 0.25
    measurement_noise_scale: float = 1.0
    solver: str = "auto"
    bnb_node_limit: int = 20000

    def __post_init__(self) -> None:
        checks = {
            "detection_probability": 0.0 < self.detection_probability < 1.0,
            "clutter_density": self.clutter_density > 0.0,
            "birth_density": self.birth_density > 0.0,
            "gate_probability": 0.0 < self.gate_probability < 1.0,
            "n_scan": self.n_scan >= 1,
            "max_leaves": self.max_leaves >= 2,
            "leaf_score_margin": self.leaf_score_margin > 0.0,
            "max_misses": self.max_misses >= 1,
            "max_overlap": self.max_overlap in (1, 2, 3),
            "overlap_intensity_tolerance": self.overlap_intensity_tolerance >= 0.0,
            "intensity_log_sigma": self.intensity_log_sigma > 0.0,
            "overlap_probability": 0.0 < self.overlap_probability <= 1.0,
            "fragment_probability": 0.0 <= self.fragment_probability <= 1.0,
            "intensity_drift": self.intensity_drift >= 0.0,
            "overlap_distance": self.overlap_distance > 0.0,
            "overlap_min_detections": self.overlap_min_detections >= 1,
            "death_probability": 0.0 < self.death_probability <= 1.0,
            "process_noise": self.process_noise >= 0.0,
            "initial_velocity_std": self.initial_velocity_std >= 0.0,
            "measurement_noise_floor": self.measurement_noise_floor > 0.0,
            "measurement_noise_scale": self.measurement_noise_scale >= 0.0,
            "solver": self.solver in ("auto", "milp"),
            "bnb_node_limit": self.bnb_node_limit >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid tracking parameter(s): {', '.join(bad)}")


# --------------------------------------------------------------------------- state


@dataclass
class Entry:
    """One scan of one hypothesis: what the track did and where it was."""

    scan: int
    kind: str
    spot: int  # spot index in that scan, -1 when none
    group: int  # overlap group index in that scan's record, -1 when none
    pos: tuple[float, float, float]  # the row's position (see TrackRow)
    score: float

    def key(self) -> tuple[str, int, int]:
        return (self.kind, self.spot, self.group)


@dataclass
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
    solo: int = 0  # solo detections (D, F) so far, saturating at _SOLO_CAP


@dataclass
class Tree:
    """All hypotheses about one track (one birth)."""

    uid: int  # internal, never reused
    birth_scan: int
    birth_spot: int
    public_id: int  # 0 until the track first appears in a result
    confirmed: bool  # its birth is final: some leaf must be chosen
    leaves: list[Leaf]


@dataclass
class ScanRecord:
    """What the open window remembers of a scan: spot features and overlap groups."""

    scan: int
    usable: bool
    features: list[dict[str, Any]]
    groups: list[tuple[int, tuple[int, ...]]]  # (spot, member tree uids)


@dataclass
class MHTState:
    """The full, serialisable tracker state of one region."""

    last_scan: int | None = None
    next_uid: int = 1
    next_public_id: int = 1
    window: list[ScanRecord] = field(default_factory=list)
    trees: list[Tree] = field(default_factory=list)


# ----------------------------------------------------------------------- helpers


def _json_normalise(obj: dict[str, Any]) -> dict[str, Any]:
    """Features exactly as they come back from JSON, so live and restored runs agree."""
    return json.loads(json.dumps(obj, allow_nan=False))


def _pos3(v: np.ndarray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, a: int) -> int:
        while self.parent[a] != a:
            self.parent[a] = self.parent[self.parent[a]]
            a = self.parent[a]
        return a

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


# --------------------------------------------------------------------------- MHT


class MHT:
    """The MHT of one region; `step` advances it by one scan."""

    def __init__(
        self,
        params: MHTParams,
        axes: tuple[str, str] = ("eta", "tth"),
        state: MHTState | None = None,
    ) -> None:
        self.params = params
        self.axes = (str(axes[0]), str(axes[1]))
        self.state = state if state is not None else MHTState()
        pd = params.detection_probability
        self._log_pd = math.log(pd)
        self._log_miss = math.log(1.0 - pd)
        self._log_death = math.log(params.death_probability)
        self._log_clutter = math.log(params.clutter_density)
        self._birth_score = math.log(params.birth_density / params.clutter_density)
        self._gate = kalman.gate_threshold(params.gate_probability)
        self._log_overlap = math.log(params.overlap_probability)

    # ------------------------------------------------------------------ public

    def step(self, scan: int, spots: list[Spot] | None) -> StepResult:
        """Extend by one scan; spots None = the scan's data were unusable."""
        st = self.state
        scan = int(scan)
        if st.last_scan is not None and scan <= st.last_scan:
            raise ValueError(f"scan {scan} is not after the last scan {st.last_scan}")
        dt = float(scan - st.last_scan) if st.last_scan is not None else 1.0
        record = ScanRecord(
            scan=scan,
            usable=spots is not None,
            features=[_json_normalise(s.features) for s in spots or []],
            groups=[],
        )
        st.window.append(record)
        self._expand(scan, dt, spots, record)
        self._prune_margin()
        self._drop_unsupported()
        chosen = self._solve()
        self._drop_shadowed_births(scan, chosen)
        self._cap_leaves(chosen)
        rows = self._rows(chosen)
        first_open = st.window[0].scan
        if len(st.window) >= self.params.n_scan:
            self._finalize(chosen)
        st.last_scan = scan
        return StepResult(scan=scan, first_open_scan=first_open, rows=tuple(rows))

    def leaf_counts(self) -> dict[int, int]:
        """Leaves per tree (by internal uid); for tests and diagnostics."""
        return {t.uid: len(t.leaves) for t in self.state.trees}

    # ---------------------------------------------------------------- scoring

    def _intensity_term(self, measured: float, predicted: float, var: float) -> float:
        """log N(log(measured / predicted); 0, var), saturating at a few sigma."""
        r = math.log(max(measured, 1e-12) / max(predicted, 1e-12))
        z2 = min(r * r / var, _INTENSITY_CAP_SIGMA**2)
        return -0.5 * (z2 + math.log(2.0 * math.pi * var))

    def _spot_noise(self, spot: Spot, cov: np.ndarray) -> np.ndarray:
        """Centroid noise: detection's standard errors when it gives them, else spread/intensity."""
        p = self.params
        err = spot.features.get("position_error")
        if isinstance(err, dict):
            try:
                sd = [float(err[a]) for a in ("omega", *self.axes)]
            except (KeyError, TypeError, ValueError):
                sd = []
            if len(sd) == 3 and all(math.isfinite(v) and v >= 0.0 for v in sd):
                return np.diag(np.square(sd)) * p.measurement_noise_scale + (
                    p.measurement_noise_floor**2
                ) * np.eye(3)
        return kalman.measurement_noise(
            cov, spot.intensity, p.measurement_noise_floor, p.measurement_noise_scale
        )

    def _intensity_var(self, spot: Spot) -> float:
        """Variance of log(intensity): the spot's own error (if known) plus the track model's."""
        var = self.params.intensity_log_sigma**2
        err = spot.features.get("intensity_error")
        if isinstance(err, (int, float)) and math.isfinite(err) and spot.intensity > 0:
            var += (float(err) / float(spot.intensity)) ** 2
        return var

    # ---------------------------------------------------------------- expand

    def _expand(self, scan: int, dt: float, spots: list[Spot] | None, record: ScanRecord) -> None:
        p = self.params
        st = self.state
        live: list[tuple[Tree, Leaf]] = []
        children: dict[int, list[Leaf]] = {t.uid: [] for t in st.trees}
        for tree in st.trees:
            for leaf in tree.leaves:
                if leaf.dead:
                    children[tree.uid].append(self._dead_child(leaf, scan))
                else:
                    live.append((tree, leaf))

        drift = dt * p.intensity_drift**2
        vpred = [lf.intensity_var + drift for _, lf in live]
        if live:
            xs = np.stack([lf.x for _, lf in live])
            ps = np.stack([lf.p for _, lf in live])
            xp, pp = kalman.predict(xs, ps, dt, p.process_noise)
        else:
            xp = np.zeros((0, kalman.STATE))
            pp = np.zeros((0, kalman.STATE, kalman.STATE))

        n = len(spots) if spots is not None else 0
        if n:
            z = np.stack([np.asarray(s.position, dtype=float) for s in spots])
            inten = np.array([float(s.intensity) for s in spots])
            cov = np.stack([np.asarray(s.covariance, dtype=float) for s in spots])
            cov = 0.5 * (cov + np.swapaxes(cov, 1, 2))
            r = np.stack([self._spot_noise(sp, cov[j]) for j, sp in enumerate(spots)])
            ivar = np.array([self._intensity_var(sp) for sp in spots])
        persist: dict[int, list[Leaf]] = {}
        if n and live:
            d2, ll, _ = kalman.innovations(xp, pp, z, r)
            gated = d2 <= self._gate
            gi, gj = np.nonzero(gated)  # row-major: per leaf, spots in order
            if gi.size:
                xn_all, pn_all = kalman.update_many(xp[gi], pp[gi], z[gj], r[gj])
                for g, (i, j) in enumerate(zip(gi.tolist(), gj.tolist(), strict=True)):
                    leaf = live[i][1]
                    s_int = vpred[i] + float(ivar[j])
                    score = (
                        self._log_pd
                        + float(ll[i, j])
                        - self._log_clutter
                        + self._intensity_term(inten[j], leaf.intensity, s_int)
                    )
                    # scalar Kalman update of log intensity
                    gain = vpred[i] / s_int
                    log_ratio = math.log(max(float(inten[j]), 1e-12) / leaf.intensity)
                    new_int = leaf.intensity * math.exp(gain * log_ratio)
                    entry = Entry(scan, DETECTED, j, -1, _pos3(z[j]), score)
                    persist.setdefault(i, []).append(
                        self._child(
                            leaf,
                            xn_all[g],
                            pn_all[g],
                            new_int,
                            (1.0 - gain) * vpred[i],
                            0,
                            False,
                            entry,
                            width=(1.0 - _WIDTH_SMOOTHING) * leaf.width + _WIDTH_SMOOTHING * cov[j],
                        )
                    )
            rblob = r + cov
            d2b, _, _ = kalman.innovations(xp, pp, z, rblob)
            member = d2b <= self._gate
            overlap_children = self._overlap_children(
                scan, live, vpred, xp, pp, z, inten, ivar, r, rblob, cov, member, d2b, record
            )
            fragment_children = self._fragment_children(
                scan, live, vpred, xp, pp, z, inten, ivar, r, cov, member
            )
        else:
            overlap_children = {}
            fragment_children = {}

        for i, (tree, leaf) in enumerate(live):
            out = children[tree.uid]
            # missed detection (or death, or predicted through an unusable scan)
            if spots is None:
                out.append(
                    self._child(
                        leaf,
                        xp[i],
                        pp[i],
                        leaf.intensity,
                        vpred[i],
                        leaf.misses,
                        False,
                        Entry(scan, UNUSABLE, -1, -1, _pos3(xp[i]), 0.0),
                        keep_incumbent=True,
                    )
                )
                continue
            misses = leaf.misses + 1
            kind = DEAD if misses >= p.max_misses else MISSED
            out.append(
                self._child(
                    leaf,
                    xp[i],
                    pp[i],
                    leaf.intensity,
                    vpred[i],
                    misses,
                    kind == DEAD,
                    Entry(
                        scan,
                        kind,
                        -1,
                        -1,
                        _pos3(xp[i]),
                        self._log_miss + (self._log_death if kind == DEAD else 0.0),
                    ),
                    keep_incumbent=True,
                )
            )
            out.extend(persist.get(i, []))  # persist on each gated spot
            out.extend(overlap_children.get(i, []))
            out.extend(fragment_children.get(i, []))

        for tree in st.trees:
            tree.leaves = children[tree.uid]

        # birth: every spot may start a track
        for j in range(n):
            x0, p0 = kalman.initial_state(z[j], r[j], p.initial_velocity_std)
            entry = Entry(scan, DETECTED, j, -1, _pos3(z[j]), self._birth_score)
            leaf = Leaf(
                x0,
                p0,
                float(inten[j]),
                float(ivar[j]),
                0,
                False,
                False,
                self._birth_score,
                [entry],
                cov[j].copy(),
                1,
            )
            st.trees.append(Tree(st.next_uid, scan, j, 0, False, [leaf]))
            st.next_uid += 1

    def _fragment_children(
        self,
        scan: int,
        live: list[tuple[Tree, Leaf]],
        vpred: list[float],
        xp: np.ndarray,
        pp: np.ndarray,
        z: np.ndarray,
        inten: np.ndarray,
        ivar: np.ndarray,
        r: np.ndarray,
        cov: np.ndarray,
        member: np.ndarray,
    ) -> dict[int, list[Leaf]]:
        """Children where one track explains two nearby spots (detection split its spot).

        Only pairs of spots that both sit inside the track's spot and whose
        summed intensity matches the track's are considered.
        """
        p = self.params
        out: dict[int, list[Leaf]] = {}
        if p.fragment_probability <= 0.0:
            return out
        tol = p.overlap_intensity_tolerance
        jobs: list[tuple[int, int, int]] = []
        for i in range(len(live)):
            spots_in = np.flatnonzero(member[i]).tolist()
            if len(spots_in) < 2:
                continue
            mine = live[i][1].intensity
            for j1, j2 in itertools.combinations(spots_in, 2):
                d = z[j1] - z[j2]
                if float(d @ np.linalg.solve(cov[j1] + cov[j2], d)) > _FRAGMENT_GATE:
                    continue  # too far apart to be two halves of one spot
                if abs(inten[j1] + inten[j2] - mine) <= tol * mine:
                    # the brighter fragment first: its features describe the row
                    jobs.append((i, j1, j2) if inten[j1] >= inten[j2] else (i, j2, j1))
        if not jobs:
            return out
        ii = np.array([q[0] for q in jobs], dtype=np.intp)
        j1 = np.array([q[1] for q in jobs], dtype=np.intp)
        j2 = np.array([q[2] for q in jobs], dtype=np.intp)
        tot = inten[j1] + inten[j2]
        w1, w2 = inten[j1] / tot, inten[j2] / tot
        zc = w1[:, None] * z[j1] + w2[:, None] * z[j2]
        rc = (w1**2)[:, None, None] * r[j1] + (w2**2)[:, None, None] * r[j2]
        ll = kalman.loglik_many(zc - xp[ii, :3], pp[ii, :3, :3] + rc)
        apart = kalman.loglik_many(z[j1] - z[j2], cov[j1] + cov[j2] + r[j1] + r[j2])
        xn, pn = kalman.update_many(xp[ii], pp[ii], zc, rc)
        base = self._log_pd + math.log(p.fragment_probability) - 2.0 * self._log_clutter
        for q, (i, a, b) in enumerate(jobs):
            leaf = live[i][1]
            var_spot = float(w1[q] ** 2 * ivar[a] + w2[q] ** 2 * ivar[b])
            s_int = vpred[i] + var_spot
            score = (
                base
                + float(ll[q])
                + float(apart[q])
                + self._intensity_term(float(tot[q]), leaf.intensity, s_int)
            )
            gain = vpred[i] / s_int
            new_int = leaf.intensity * math.exp(gain * math.log(float(tot[q]) / leaf.intensity))
            entry = Entry(scan, FRAGMENTS, a, b, _pos3(zc[q]), score)
            d = z[a] - z[b]
            mix = w1[q] * cov[a] + w2[q] * cov[b] + w1[q] * w2[q] * np.outer(d, d)
            width = (1.0 - _WIDTH_SMOOTHING) * leaf.width + _WIDTH_SMOOTHING * mix
            out.setdefault(i, []).append(
                self._child(
                    leaf,
                    xn[q],
                    pn[q],
                    new_int,
                    (1.0 - gain) * vpred[i],
                    0,
                    False,
                    entry,
                    width=width,
                )
            )
        return out

    @staticmethod
    def _child(
        parent: Leaf,
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
        solo = parent.solo + (1 if entry.kind in (DETECTED, FRAGMENTS) else 0)
        return Leaf(
            x=np.array(x, dtype=float),
            p=np.array(pcov, dtype=float),
            intensity=float(intensity),
            intensity_var=float(intensity_var),
            misses=int(misses),
            dead=dead,
            incumbent=parent.incumbent and keep_incumbent,
            score=parent.score + entry.score,
            history=[*parent.history, entry],
            width=parent.width if width is None else width,
            solo=min(solo, _SOLO_CAP),
        )

    @staticmethod
    def _dead_child(leaf: Leaf, scan: int) -> Leaf:
        entry = Entry(scan, DEAD, -1, -1, _pos3(leaf.x), 0.0)
        return Leaf(
            leaf.x,
            leaf.p,
            leaf.intensity,
            leaf.intensity_var,
            leaf.misses,
            True,
            leaf.incumbent,
            leaf.score,
            [*leaf.history, entry],
            leaf.width,
            leaf.solo,
        )

    def _overlap_children(
        self,
        scan: int,
        live: list[tuple[Tree, Leaf]],
        vpred: list[float],
        xp: np.ndarray,
        pp: np.ndarray,
        z: np.ndarray,
        inten: np.ndarray,
        ivar: np.ndarray,
        r: np.ndarray,
        rblob: np.ndarray,
        cov: np.ndarray,
        member: np.ndarray,
        d2b: np.ndarray,
        record: ScanRecord,
    ) -> dict[int, list[Leaf]]:
        """Children for groups of tracks that share one spot (indexed by live leaf)."""
        p = self.params
        out: dict[int, list[Leaf]] = {}
        jobs: list[tuple[int, list[int], int, int, int]] = []
        if p.max_overlap < 2:
            return out
        for j in range(z.shape[0]):
            by_tree: dict[int, list[int]] = {}
            for i in np.flatnonzero(member[:, j]):
                if live[i][1].solo >= p.overlap_min_detections:
                    by_tree.setdefault(live[i][0].uid, []).append(int(i))
            if len(by_tree) < 2:
                continue
            # representative leaf per tree: its best-scoring member leaf
            reps = {u: max(idx, key=lambda i: (live[i][1].score, -i)) for u, idx in by_tree.items()}
            cands = sorted(by_tree, key=lambda u: (float(d2b[reps[u], j]), u))
            cands = sorted(cands[:_MAX_OVERLAP_CANDIDATES])
            tol = p.overlap_intensity_tolerance

            def fits(total: float, measured: float = float(inten[j]), tol: float = tol) -> bool:
                return abs(measured - total) <= tol * total

            top = {
                u: sorted(by_tree[u], key=lambda i: (-live[i][1].score, i))[:_REP_LEAVES]
                for u in by_tree
            }
            for k in range(2, min(p.max_overlap, len(cands)) + 1):
                for combo in itertools.combinations(cands, k):
                    # representatives: the best-scoring leaves whose intensities add up
                    best: tuple[int, ...] | None = None
                    best_score = -math.inf
                    for assign in itertools.product(*(top[u] for u in combo)):
                        if fits(sum(live[i][1].intensity for i in assign)):
                            sc = sum(live[i][1].score for i in assign)
                            if sc > best_score:
                                best, best_score = assign, sc
                    if best is None:
                        continue
                    g = len(record.groups)
                    record.groups.append((j, tuple(combo)))
                    for a, u in enumerate(combo):
                        others = [best[o] for o in range(k) if o != a]
                        rest = sum(live[i][1].intensity for i in others)
                        for i in by_tree[u]:
                            if fits(live[i][1].intensity + rest):
                                jobs.append((i, others, j, g, k))
        if not jobs:
            return out
        # all overlap children at once: weights, group centre, group spread
        nj = len(jobs)
        idx = np.zeros((nj, 3), dtype=np.intp)
        w = np.zeros((nj, 3))
        wvar = np.zeros(nj)
        for q, (i, others, _, _, _) in enumerate(jobs):
            members = [i, *others]
            idx[q, : len(members)] = members
            w[q, : len(members)] = [live[m][1].intensity for m in members]
        total = w.sum(axis=1)
        w = w / total[:, None]
        for q, (i, others, _, _, _) in enumerate(jobs):
            wvar[q] = sum(w[q, a] ** 2 * vpred[m] for a, m in enumerate([i, *others]))
        jj = np.array([job[2] for job in jobs], dtype=np.intp)
        centre = np.einsum("qa,qai->qi", w, xp[idx, :3])
        spread = (w**2)[:, :, None, None] * pp[idx, :3, :3]  # (J, 3, 3, 3)
        ll = kalman.loglik_many(z[jj] - centre, r[jj] + spread.sum(axis=1))
        # each member sits somewhere inside the blob: an update towards its centre
        # whose noise is the blob's spread beyond the member's own width (plus
        # half that width, measured on the sim: tighter loses crossings, looser
        # lets long merges drift apart), so members that stay merged lose their
        # relative velocity and members just passing keep most of it
        own = idx[:, 0]
        widths = np.stack([live[i][1].width for i, *_ in jobs])
        offset = cov[jj] - widths  # where inside the blob the member may sit
        evals, evecs = np.linalg.eigh(0.5 * (offset + np.swapaxes(offset, 1, 2)))
        offset = (evecs * np.maximum(evals, 0.0)[:, None, :]) @ np.swapaxes(evecs, 1, 2)
        zm = z[jj].copy()
        rm = r[jj] + offset + 0.5 * widths
        pairs = np.array([job[4] == 2 for job in jobs])
        if pairs.any():
            at = np.flatnonzero(pairs)
            dz, dr, sure = self._deblend_pairs(
                idx[at, :2], w[at, :2], xp, live, z[jj[at]], r[jj[at]], cov[jj[at]]
            )
            zm[at[sure]], rm[at[sure]] = dz[sure], dr[sure]
        xn, pn = kalman.update_many(xp[own], pp[own], zm, rm)
        for q, (i, _, j, g, k) in enumerate(jobs):
            joint = (
                -self._log_clutter
                + float(ll[q])
                + self._intensity_term(
                    float(inten[j]), float(total[q]), float(ivar[j]) + float(wvar[q])
                )
            )
            score = self._log_pd + self._log_overlap + joint / k
            entry = Entry(scan, OVERLAP, j, g, _pos3(xn[q]), score)
            leaf = live[i][1]
            out.setdefault(i, []).append(
                self._child(leaf, xn[q], pn[q], leaf.intensity, vpred[i], 0, False, entry)
            )
        return out

    @staticmethod
    def _deblend_pairs(
        idx: np.ndarray,
        w: np.ndarray,
        xp: np.ndarray,
        live: list[tuple[Tree, Leaf]],
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
        spread) are pulled to the blob's centre. Rows: (member, partner).
        Returns the members' position measurements, their noise, and whether
        the prediction tells the sign of d (see below).
        """
        own = np.stack([live[i][1].width for i in idx[:, 0]])
        other = np.stack([live[i][1].width for i in idx[:, 1]])
        w1, w2 = w[:, 0], w[:, 1]
        excess = cov - w1[:, None, None] * own - w2[:, None, None] * other
        excess = 0.5 * (excess + np.swapaxes(excess, 1, 2))
        evals, evecs = np.linalg.eigh(excess)
        lam = np.maximum(evals[:, -1], 0.0)
        axis = evecs[:, :, -1]
        dist = np.sqrt(lam / np.maximum(w1 * w2, 1e-6))
        predicted = xp[idx[:, 0], :3] - xp[idx[:, 1], :3]
        sign = np.where(np.einsum("qi,qi->q", predicted, axis) >= 0.0, 1.0, -1.0)
        d = (sign * dist)[:, None] * axis
        zm = z + w2[:, None] * d
        # a sign the prediction cannot tell (members predicted on top of each
        # other while the blob stretches: a merged pair starting to split) is
        # not guessed: the loose update towards the blob's centre is kept and
        # the next solo detections (intensity) decide who went where
        sure = np.abs(np.einsum("qi,qi->q", predicted, axis)) >= _DEBLEND_SIGN_SHARE * dist
        # the spread estimate is rough: its error grows with the partner's share
        # and with the members' widths (a blob's second moment is noisy)
        scale = (w2**2)[:, None, None]
        rm = r + scale * (_DEBLEND_WIDTH_NOISE * 0.5 * (own + other))
        rm = rm + scale * (_DEBLEND_DIST_NOISE * dist**2)[:, None, None] * (
            axis[:, :, None] * axis[:, None, :]
        )
        return zm, rm, sure

    # ----------------------------------------------------------------- prune

    def _prune_scores(self, tree: Tree) -> list[float]:
        """Leaf scores for pruning inside one tree, with each overlap's shared part added back.

        An overlap entry gives each of its k members only 1/k of the group's
        joint likelihood ratio; the partners hold the rest. Compared inside
        one tree, a member's overlap leaf therefore looks (k-1)/k of that
        ratio (~6 nats per scan for a pair) worse than taking the spot alone,
        although jointly the overlap may be the better answer: a long merge
        would be pruned away before the solver ever saw it. Pruning ranks
        leaves by score plus that missing share (never less than the score).
        """
        groups = {rec.scan: rec.groups for rec in self.state.window}
        base = self._log_pd + self._log_overlap
        out = []
        for lf in tree.leaves:
            bonus = 0.0
            for e in lf.history:
                if e.kind == OVERLAP:
                    k = len(groups[e.scan][e.group][1])
                    bonus += max(0.0, (k - 1) * (e.score - base))
            out.append(lf.score + bonus)
        return out

    def _prune_margin(self) -> None:
        margin = self.params.leaf_score_margin
        for tree in self.state.trees:
            scores = self._prune_scores(tree)
            best = max(scores)
            tree.leaves = [
                lf
                for lf, sc in zip(tree.leaves, scores, strict=True)
                if lf.incumbent or sc >= best - margin
            ]

    def _drop_unsupported(self) -> None:
        """Remove overlap leaves whose partners no longer hold the same overlap."""
        st = self.state
        groups = {rec.scan: rec.groups for rec in st.window}
        while True:
            support: dict[tuple[int, int], set[int]] = {}
            for tree in st.trees:
                for lf in tree.leaves:
                    for e in lf.history:
                        if e.kind == OVERLAP:
                            support.setdefault((e.scan, e.group), set()).add(tree.uid)
            removed = False
            for tree in st.trees:
                keep = [
                    lf
                    for lf in tree.leaves
                    if all(
                        e.kind != OVERLAP
                        or set(groups[e.scan][e.group][1]) <= support[(e.scan, e.group)]
                        for e in lf.history
                    )
                ]
                if len(keep) != len(tree.leaves):
                    tree.leaves = keep
                    removed = True
            if not removed:
                break
        st.trees = [t for t in st.trees if t.leaves]

    def _drop_shadowed_births(self, scan: int, chosen: dict[int, Leaf | None]) -> None:
        """Forget new tentative tracks whose spot the best hypothesis gave to a confirmed track.

        Every spot starts a tentative tree; keeping the ones that lost their
        spot to an established track would double the search for nothing
        useful (if that spot really was a new track, its next detections start
        one). Unclaimed spots keep their trees, so clutter-vs-track revisions
        inside the window still happen.
        """
        claimed = {
            spot
            for tree in self.state.trees
            if tree.confirmed and chosen.get(tree.uid) is not None
            for e in chosen[tree.uid].history
            if e.scan == scan and e.kind in (DETECTED, OVERLAP, FRAGMENTS)
            for spot in ((e.spot, e.group) if e.kind == FRAGMENTS else (e.spot,))
        }
        self.state.trees = [
            t
            for t in self.state.trees
            if not (t.birth_scan == scan and chosen.get(t.uid) is None and t.birth_spot in claimed)
        ]

    def _cap_leaves(self, chosen: dict[int, Leaf | None]) -> None:
        cap = self.params.max_leaves
        for tree in self.state.trees:
            best = chosen.get(tree.uid)
            for lf in tree.leaves:
                lf.incumbent = lf is best
            if len(tree.leaves) <= cap:
                continue
            scores = self._prune_scores(tree)
            order = sorted(range(len(tree.leaves)), key=lambda a: (-scores[a], a))
            keep = [a for a in order if tree.leaves[a] is best]
            keep += [a for a in order if tree.leaves[a] is not best][: cap - len(keep)]
            tree.leaves = [tree.leaves[a] for a in sorted(keep)]

    # ----------------------------------------------------------------- solve

    def _solve(self) -> dict[int, Leaf | None]:
        """Best global hypothesis: tree uid -> chosen leaf (None = tentative tree dropped)."""
        trees = self.state.trees
        index = {t.uid: a for a, t in enumerate(trees)}
        uf = _UnionFind(len(trees))
        first_user: dict[tuple[int, int], int] = {}
        groups = {rec.scan: rec.groups for rec in self.state.window}
        for a, tree in enumerate(trees):
            for lf in tree.leaves:
                for e in lf.history:
                    if e.spot < 0:
                        continue
                    b = first_user.setdefault((e.scan, e.spot), a)
                    uf.union(a, b)
                    if e.kind == FRAGMENTS:
                        uf.union(a, first_user.setdefault((e.scan, e.group), a))
                    if e.kind == OVERLAP:
                        for u in groups[e.scan][e.group][1]:
                            if u in index:
                                uf.union(a, index[u])
        clusters: dict[int, list[int]] = {}
        for a in range(len(trees)):
            clusters.setdefault(uf.find(a), []).append(a)
        chosen: dict[int, Leaf | None] = {}
        for members in clusters.values():
            ctrees = [trees[a] for a in members]
            pick = self._independent_best(ctrees)
            if len(ctrees) > 1 and not self._feasible(ctrees, pick, groups):
                exact = None
                if self.params.solver == "auto":
                    exact = self._branch_and_bound(ctrees, groups, self.params.bnb_node_limit)
                pick = exact if exact is not None else self._milp(ctrees, groups)
            for tree, leaf in zip(ctrees, pick, strict=True):
                chosen[tree.uid] = leaf
        return chosen

    @staticmethod
    def _independent_best(ctrees: list[Tree]) -> list[Leaf | None]:
        pick: list[Leaf | None] = []
        for tree in ctrees:
            best = max(tree.leaves, key=lambda lf: lf.score)  # first of equals
            pick.append(best if tree.confirmed or best.score > 0.0 else None)
        return pick

    @staticmethod
    def _spot_uses(e: Entry, tree: Tree, groups: dict) -> tuple[tuple[int, int], ...]:
        """The spots this entry uses up (an overlap group counts once, on its first member)."""
        if e.kind == DETECTED:
            return ((e.scan, e.spot),)
        if e.kind == FRAGMENTS:
            return ((e.scan, e.spot), (e.scan, e.group))
        if e.kind == OVERLAP and groups[e.scan][e.group][1][0] == tree.uid:
            return ((e.scan, e.spot),)
        return ()

    def _feasible(self, ctrees: list[Tree], pick: list[Leaf | None], groups: dict) -> bool:
        used: set[tuple[int, int]] = set()
        events: dict[int, set[tuple[int, int]]] = {}
        for tree, leaf in zip(ctrees, pick, strict=True):
            if leaf is None:
                continue
            events[tree.uid] = {(e.scan, e.group) for e in leaf.history if e.kind == OVERLAP}
            for e in leaf.history:
                for key in self._spot_uses(e, tree, groups):
                    if key in used:
                        return False
                    used.add(key)
        for evs in events.values():
            for sc, g in evs:
                if any((sc, g) not in events.get(u, ()) for u in groups[sc][g][1]):
                    return False
        return True

    def _branch_and_bound(
        self, ctrees: list[Tree], groups: dict, node_limit: int
    ) -> list[Leaf | None] | None:
        """Exact depth-first branch and bound; None when it needs more than node_limit nodes.

        HiGHS costs milliseconds per call even for a 20-variable program, so
        small clusters are solved here with the same constraints (one leaf per
        confirmed tree, at most one per tentative tree, one use per spot, an
        overlap group shared by all its members) and an admissible bound (each
        undecided tree at its best), which proves optimality just the same.
        Ties keep the first option in (score, leaf order), so it is deterministic.
        """
        pos = {t.uid: k for k, t in enumerate(ctrees)}
        n = len(ctrees)
        # per option: score, leaf, spot claims, its events, checks against
        # earlier trees (ev, d) and requirements it imposes on later ones (d, ev)
        options: list[list[tuple]] = []
        by_event: list[dict[tuple[int, int], set[int]]] = []
        for k, tree in enumerate(ctrees):
            opts: list[tuple] = []
            for lf in tree.leaves:
                claims: list[tuple[tuple[int, int], tuple[int, int] | None]] = []
                evs: list[tuple[int, int]] = []
                for e in lf.history:
                    if e.kind == DETECTED:
                        claims.append(((e.scan, e.spot), None))
                    elif e.kind == FRAGMENTS:
                        claims.append(((e.scan, e.spot), None))
                        claims.append(((e.scan, e.group), None))
                    elif e.kind == OVERLAP:
                        claims.append(((e.scan, e.spot), (e.scan, e.group)))
                        evs.append((e.scan, e.group))
                members = [(ev, pos.get(u)) for ev in evs for u in groups[ev[0]][ev[1]][1]]
                if any(d is None for _, d in members):
                    continue  # a partner outside this cluster cannot agree
                checks = [(ev, d) for ev, d in members if d < k]
                pushes = [(d, ev) for ev, d in members if d > k]
                opts.append((lf.score, lf, claims, frozenset(evs), checks, pushes))
            if not tree.confirmed:
                opts.append((0.0, None, [], frozenset(), [], []))
            if not opts:
                return None
            opts.sort(key=lambda o: -o[0])  # stable: ties keep leaf order
            options.append(opts)
            index: dict[tuple[int, int], set[int]] = {}
            for a, o in enumerate(opts):
                for ev in o[3]:
                    index.setdefault(ev, set()).add(a)
            by_event.append(index)
        suffix = [0.0] * (n + 1)
        for k in range(n - 1, -1, -1):
            suffix[k] = suffix[k + 1] + options[k][0][0]
        used: dict[tuple[int, int], tuple[int, int] | None] = {}
        picked = [0] * n
        picked_events: list[frozenset] = [frozenset()] * n
        required: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        best_score = -math.inf
        best_pick: list[int] | None = None
        nodes = 0

        def search(k: int, score: float) -> bool:
            nonlocal best_score, best_pick, nodes
            nodes += 1
            if nodes > node_limit:
                return False
            if k == n:
                if score > best_score:
                    best_score, best_pick = score, list(picked)
                return True
            if required[k]:  # an earlier partner fixed this tree's overlap
                allowed = set.intersection(*(by_event[k].get(ev, set()) for ev in required[k]))
                candidates = sorted(allowed)
            else:
                candidates = range(len(options[k]))
            for a in candidates:
                sc, _, claims, evs, checks, pushes = options[k][a]
                if score + sc + suffix[k + 1] <= best_score:
                    break  # sorted by score: no later option can do better
                if any(ev not in picked_events[d] for ev, d in checks):
                    continue
                added: list[tuple[int, int]] = []
                clash = False
                for key, ev in claims:
                    owner = used.get(key, _FREE)
                    if owner is _FREE:
                        used[key] = ev
                        added.append(key)
                    elif ev is None or owner != ev:
                        clash = True
                        break
                if not clash:
                    picked[k], picked_events[k] = a, evs
                    for d, ev in pushes:
                        required[d].append(ev)
                    if not search(k + 1, score + sc):
                        return False
                    for d, _ in pushes:
                        required[d].pop()
                for key in added:
                    del used[key]
            return True

        if not search(0, 0.0) or best_pick is None:
            return None
        return [options[k][a][1] for k, a in enumerate(best_pick)]

    def _milp(self, ctrees: list[Tree], groups: dict) -> list[Leaf | None]:
        var: list[tuple[int, Leaf]] = []
        cost: list[float] = []
        for t, tree in enumerate(ctrees):
            top = max(lf.score for lf in tree.leaves) if tree.confirmed else 0.0
            for lf in tree.leaves:
                var.append((t, lf))
                cost.append(-(lf.score - top))  # shift: better conditioned, same optimum
        nvar = len(var)
        rows: list[dict[int, float]] = []
        lo: list[float] = []
        hi: list[float] = []
        for t, tree in enumerate(ctrees):
            rows.append({v: 1.0 for v, (tv, _) in enumerate(var) if tv == t})
            lo.append(1.0 if tree.confirmed else 0.0)
            hi.append(1.0)
        spot_rows: dict[tuple[int, int], dict[int, float]] = {}
        event_vars: dict[tuple[int, int], dict[int, list[int]]] = {}
        for v, (t, lf) in enumerate(var):
            for e in lf.history:
                for key in self._spot_uses(e, ctrees[t], groups):
                    spot_rows.setdefault(key, {})[v] = 1.0
                if e.kind == OVERLAP:
                    event_vars.setdefault((e.scan, e.group), {}).setdefault(
                        ctrees[t].uid, []
                    ).append(v)
        for key in sorted(spot_rows):
            rows.append(spot_rows[key])
            lo.append(0.0)
            hi.append(1.0)
        for key in sorted(event_vars):
            members = groups[key[0]][key[1]][1]
            rep = event_vars[key].get(members[0], [])
            for u in members[1:]:
                row = {v: 1.0 for v in rep}
                for v in event_vars[key].get(u, []):
                    row[v] = row.get(v, 0.0) - 1.0
                rows.append(row)
                lo.append(0.0)
                hi.append(0.0)
        a = np.zeros((len(rows), nvar))
        for k, row in enumerate(rows):
            for v, c in row.items():
                a[k, v] = c
        res = milp(
            np.array(cost),
            constraints=LinearConstraint(a, np.array(lo), np.array(hi)),
            integrality=np.ones(nvar),
            bounds=Bounds(0.0, 1.0),
            options={"mip_rel_gap": 0.0},
        )
        pick: list[Leaf | None] = [None] * len(ctrees)
        if res.x is None or not res.success:
            log.warning(
                "MHT integer program failed (%s); keeping the previous hypothesis", res.message
            )
            for t, tree in enumerate(ctrees):
                inc = [lf for lf in tree.leaves if lf.incumbent]
                if tree.confirmed:
                    pick[t] = inc[0] if inc else tree.leaves[0]
            return pick
        for v, (t, lf) in enumerate(var):
            if res.x[v] > 0.5:
                pick[t] = lf
        return pick

    # ------------------------------------------------------------------ rows

    def _posdict(self, pos: tuple[float, float, float]) -> dict[str, float]:
        return {"omega": pos[0], self.axes[0]: pos[1], self.axes[1]: pos[2]}

    def _rows(self, chosen: dict[int, Leaf | None]) -> list[TrackRow]:
        st = self.state
        shown: list[tuple[Tree, list[Entry]]] = []
        sigmas: dict[int, np.ndarray] = {}
        for tree in st.trees:
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
        unresolved = self._unresolved(shown, sigmas)
        for tree, _ in sorted(
            shown, key=lambda te: (te[0].birth_scan, te[0].birth_spot, te[0].uid)
        ):
            if tree.public_id == 0:
                tree.public_id = st.next_public_id
                st.next_public_id += 1
        by_uid = {t.uid: t for t in st.trees}
        records = {rec.scan: rec for rec in st.window}
        rows: list[TrackRow] = []
        for tree, entries in shown:
            for e in entries:
                rec = records[e.scan]
                if e.kind == DETECTED:
                    feats = dict(rec.features[e.spot])
                    feats["position"] = self._posdict(e.pos)
                    rows.append(
                        TrackRow(
                            tree.public_id, e.scan, True, (tree.uid, e.scan) in unresolved, feats
                        )
                    )
                elif e.kind == FRAGMENTS:  # the brighter fragment's features, summed intensity
                    feats = dict(rec.features[e.spot])
                    feats["position"] = self._posdict(e.pos)
                    a, b = rec.features[e.spot], rec.features[e.group]
                    if isinstance(a.get("intensity"), float) and isinstance(
                        b.get("intensity"), float
                    ):
                        feats["intensity"] = a["intensity"] + b["intensity"]
                    feats["fragments"] = 2
                    rows.append(
                        TrackRow(
                            tree.public_id, e.scan, True, (tree.uid, e.scan) in unresolved, feats
                        )
                    )
                elif e.kind == OVERLAP:
                    feats = dict(rec.features[e.spot])
                    if "position" in feats:
                        feats["measured_position"] = feats["position"]
                    feats["position"] = self._posdict(e.pos)
                    feats["overlap_with"] = sorted(
                        by_uid[u].public_id for u in rec.groups[e.group][1] if u != tree.uid
                    )
                    rows.append(
                        TrackRow(
                            tree.public_id, e.scan, True, (tree.uid, e.scan) in unresolved, feats
                        )
                    )
                else:
                    feats = {"position": self._posdict(e.pos), "predicted": True}
                    if e.kind == UNUSABLE:
                        feats["unusable_scan"] = True
                    rows.append(TrackRow(tree.public_id, e.scan, False, False, feats))
        rows.sort(key=lambda row: (row.scan, row.track_id))
        return rows

    def _unresolved(
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
        limit = self.params.overlap_distance
        by_scan: dict[int, list[tuple[int, np.ndarray]]] = {}
        for tree, entries in shown:
            for e in entries:
                if e.kind in (DETECTED, OVERLAP, FRAGMENTS):
                    by_scan.setdefault(e.scan, []).append((tree.uid, np.asarray(e.pos)))
        out: set[tuple[int, int]] = set()
        for scan, items in by_scan.items():
            for (u, a), (v, b) in itertools.combinations(items, 2):
                scale = np.maximum(sigmas[u] + sigmas[v], 1e-6)
                if float(np.linalg.norm((a - b) / scale)) < limit:
                    out.add((u, scan))
                    out.add((v, scan))
        return out

    # -------------------------------------------------------------- finalize

    def _finalize(self, chosen: dict[int, Leaf | None]) -> None:
        """Make the oldest open scan final: keep only descendants of the chosen node."""
        st = self.state
        f = st.window[0].scan
        kept: list[Tree] = []
        for tree in st.trees:
            if tree.birth_scan > f:
                kept.append(tree)
                continue
            leaf = chosen.get(tree.uid)
            if leaf is None:
                continue  # a tentative track that the final decision rejected
            node = leaf.history[0]
            if node.kind == DEAD:
                continue  # its death is final
            key = node.key()
            tree.leaves = [lf for lf in tree.leaves if lf.history[0].key() == key]
            for lf in tree.leaves:
                lf.score -= lf.history[0].score
                lf.history = lf.history[1:]
            tree.confirmed = True
            kept.append(tree)
        st.trees = kept
        st.window = st.window[1:]
