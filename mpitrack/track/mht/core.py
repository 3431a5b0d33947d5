"""The MHT of one region: `MHT.step` runs the stages of one scan in order.

Every stage is a component built once from the config (`MHT.__init__`):
gate (gating.py), hypothesis generators (generate.py, overlap.py), solver
(solvers.py), pruners (prune.py) and row writer (rows.py). A new gate,
hypothesis kind or solver is a new class there, chosen here; the step itself
does not change.
"""

from __future__ import annotations

import json
import math
from typing import Any

from mpitrack.track.mht.bundle import Measurements, Predictions
from mpitrack.track.mht.gating import gate_for
from mpitrack.track.mht.generate import (
    BirthHypotheses,
    FragmentHypotheses,
    HypothesisGenerator,
    MissHypotheses,
    PersistHypotheses,
    ScanContext,
)
from mpitrack.track.mht.overlap import OverlapHypotheses
from mpitrack.track.mht.params import MHTParams
from mpitrack.track.mht.prune import (
    ClusterCap,
    LeafCap,
    MarginPruner,
    PruneScores,
    drop_shadowed_births,
    drop_unsupported_overlaps,
    finalize_oldest_scan,
    unexplained_spots,
)
from mpitrack.track.mht.rows import RowWriter
from mpitrack.track.mht.scoring import ScoreModel
from mpitrack.track.mht.solve import choose
from mpitrack.track.mht.solvers import solver_for
from mpitrack.track.mht.split import SplitHypotheses
from mpitrack.track.mht.state import Leaf, MHTState, ScanRecord, Tree
from mpitrack.track.result import StepResult
from mpitrack.track.spot import Spot


def _json_normalise(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Features exactly as they come back from JSON, so live and restored runs agree."""
    return json.loads(json.dumps(features, allow_nan=False))


class MHT:
    """The MHT of one region; `step` advances it by one scan."""

    def __init__(
        self,
        params: MHTParams,
        axes: tuple[str, str] = ("eta", "tth"),
        state: MHTState | None = None,
    ) -> None:
        self.params = params
        self.state = state if state is not None else MHTState()
        p = params
        self.gate = gate_for(p)
        # a leaf's children come in this order (miss first): ties rely on it
        self.generators: tuple[HypothesisGenerator, ...] = (
            MissHypotheses(p.max_misses),
            PersistHypotheses(p.width_smoothing),
            OverlapHypotheses(
                p.max_overlap,
                p.overlap_min_detections,
                p.overlap_intensity_tolerance,
                p.max_overlap_candidates,
            ),
            FragmentHypotheses(p.overlap_intensity_tolerance, p.fragment_gate, p.width_smoothing),
        )
        self.births = BirthHypotheses(p.initial_velocity_std, p.overlap_distance)
        self.splits = SplitHypotheses(
            p.overlap_intensity_tolerance, p.fragment_gate, p.initial_velocity_std
        )
        ranking = PruneScores(math.log(p.detection_probability) + math.log(p.overlap_probability))
        self.margin = MarginPruner(ranking, p.leaf_score_margin)
        self.cluster_cap = ClusterCap(ranking, p.max_cluster_leaves)
        self.solver = solver_for(p)
        self.cap = LeafCap(ranking, p.max_leaves)
        self.writer = RowWriter((str(axes[0]), str(axes[1])), p.overlap_distance)

    def step(self, scan: int, spots: list[Spot] | None, voxels: int | None = None) -> StepResult:
        """Extend by one scan; spots None = the scan's data were unusable.

        voxels: the region volume's size, for the clutter estimate (without
        it the configured clutter density is used as it is).
        """
        st = self.state
        scan = int(scan)
        if st.last_scan is not None and scan <= st.last_scan:
            raise ValueError(f"scan {scan} is not after the last scan {st.last_scan}")
        if voxels is not None:
            st.voxels = int(voxels)
        dt = float(scan - st.last_scan) if st.last_scan is not None else 1.0
        meas = None if spots is None else Measurements.of(spots, self.params)
        record = ScanRecord(
            scan=scan,
            usable=spots is not None,
            features=_json_normalise([s.features for s in spots or []]),
            groups=[],
        )
        if meas is not None:
            record.centres, record.covariances = meas.z, meas.cov
            record.intensities = meas.intensity
        st.window.append(record)
        self._expand(scan, dt, meas, record)  # hypotheses for this scan
        self.margin.prune(st)
        self.cluster_cap.prune(st)
        drop_unsupported_overlaps(st)
        chosen = choose(st, self.solver)  # the best global hypothesis
        drop_shadowed_births(st, scan, chosen)
        self.cap.prune(st, chosen)
        rows = self.writer.rows(st, chosen)
        first_open = st.window[0].scan
        if len(st.window) >= self.params.n_scan:
            self._measure_clutter(unexplained_spots(st, chosen))
            finalize_oldest_scan(st, chosen)
        st.last_scan = scan
        return StepResult(scan=scan, first_open_scan=first_open, rows=tuple(rows))

    def _expand(self, scan: int, dt: float, meas: Measurements | None, record: ScanRecord) -> None:
        """Replace every tree's leaves by their children for this scan, then start births."""
        st = self.state
        live: list[tuple[Tree, Leaf]] = []
        children: dict[int, list[Leaf]] = {t.uid: [] for t in st.trees}
        for tree in st.trees:
            for leaf in tree.leaves:
                if leaf.dead:
                    children[tree.uid].append(leaf.dead_child(scan))
                else:
                    live.append((tree, leaf))
        pred = Predictions.of(live, dt, self.params)
        gating = self.gate.gate(pred, meas) if meas is not None and meas.n and live else None
        ctx = ScanContext(scan, pred, meas, gating, record, self.scores())
        kinds = [gen.children(ctx) for gen in self.generators]
        for i, (tree, _) in enumerate(live):
            for kind in kinds:
                children[tree.uid].extend(kind.get(i, []))
        for tree in st.trees:
            tree.leaves = children[tree.uid]
        if meas is not None:
            self.births.start(ctx, meas, st)
            self.splits.start(ctx, st)

    def clutter_density(self) -> float:
        """False spots per voxel per scan the scores assume: configured, or measured if higher."""
        measured = self.state.clutter
        floor = self.params.clutter_density
        return floor if measured is None else max(floor, measured)

    def scores(self) -> ScoreModel:
        return ScoreModel.from_params(self.params, self.clutter_density())

    def _measure_clutter(self, unexplained: int | None) -> None:
        """Fold a final scan's unexplained spots into the clutter estimate (a moving average)."""
        st = self.state
        if unexplained is None or not st.voxels:
            return
        rate = unexplained / st.voxels
        if st.clutter is None:
            st.clutter = rate
        else:
            st.clutter += (rate - st.clutter) / self.params.clutter_memory

    def leaf_counts(self) -> dict[int, int]:
        """Leaves per tree (by internal uid); for tests and diagnostics."""
        return {t.uid: len(t.leaves) for t in self.state.trees}
