"""MHT settings: the ``tracking:`` section of the config.

One frozen dataclass, validated on construction; each tracking component
takes the few fields it needs from it when the MHT is built.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MHTParams:
    """MHT settings (the ``tracking:`` section of the config).

    detection_probability: Pd, chance that a live track yields a spot in a scan.
    clutter_density: expected false spots per voxel per scan (lambda_c) in a
        clean region; the tracker raises it to what it measures, the spots its
        final decisions leave unexplained (averaged over ``clutter_memory``
        scans), so zingers, a powder ring or noise make young tracks need more
        evidence instead of multiplying hypotheses.
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
        solo detections; its birth counts as one only when its spot was
        resolved from every other spot of that scan (``overlap_distance``). A
        noise fragment born beside a real spot would otherwise ride along
        inside it as an "overlap" for ever, its intensity plus the real
        track's adding up to the spot's by construction; two spots first seen
        apart may merge in the very next scan.
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
    width_smoothing: weight of a new solo detection in a track's width
        estimate (its spot covariance), which overlap and deblending compare
        blobs against: higher follows broadening faster, lower is steadier.
    intensity_cap_sigma: the intensity term of a score saturates at this many
        standard deviations, so an intensity jump (a grain rotating into a
        stronger reflection) costs a bounded amount instead of a lost track.
    fragment_gate: two spots closer than this many of a track's own spot
        widths (its sigma along their separation) may be pieces of its spot
        that detection cut apart (fragments); further apart they are two spots,
        and the track may have been two tracks sharing one spot (a split).
        Halves of a Gaussian spot lie about 1.6 sigma apart.
    max_overlap_candidates: tracks considered per spot when enumerating
        overlap groups (the nearest by blob distance); bounds the groups per
        spot in a crowd.
    clutter_memory: scans over which the measured clutter is averaged
        (an exponential moving average).
    max_cluster_leaves: hypotheses (leaves) kept in one cluster of trees that
        compete for spots, the best-ranked (every tree keeps its best and its
        chosen one): the bound on the exact solve's cost.
    max_gated_spots: each hypothesis considers at most this many spots (the
        nearest inside its gate) for continuing alone and as many for sharing
        or fragments, so that clutter (zingers, a powder ring) cannot multiply
        the hypotheses.
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
    overlap_min_detections: int = 1
    death_probability: float = 0.01
    process_noise: float = 0.2
    initial_velocity_std: float = 1.5
    measurement_noise_floor: float = 0.25
    measurement_noise_scale: float = 1.0
    solver: str = "auto"
    bnb_node_limit: int = 20000
    width_smoothing: float = 0.3
    intensity_cap_sigma: float = 4.0
    fragment_gate: float = 2.0
    max_overlap_candidates: int = 6
    max_gated_spots: int = 4
    clutter_memory: float = 10.0
    max_cluster_leaves: int = 150

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
            "width_smoothing": 0.0 <= self.width_smoothing <= 1.0,
            "intensity_cap_sigma": self.intensity_cap_sigma > 0.0,
            "fragment_gate": self.fragment_gate > 0.0,
            "max_overlap_candidates": self.max_overlap_candidates >= 2,
            "max_gated_spots": self.max_gated_spots >= 1,
            "clutter_memory": self.clutter_memory >= 1.0,
            "max_cluster_leaves": self.max_cluster_leaves >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid tracking parameter(s): {', '.join(bad)}")
