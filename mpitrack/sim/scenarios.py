"""Named, seeded scenarios: the true spots of one region, scan by scan.

Every region of a synthetic experiment is one instance of a scenario. An
instance is a pure function of (scenario name, seed, region id, number of
scans, SimParams), so an experiment can be re-created exactly and the ground
truth never depends on the order frames are written in.

Coordinates are region-local voxel units (omega, axis1, axis2), omega being
the index inside the region's window (the tracker's convention): voxel i spans
[i - 0.5, i + 0.5], so an intensity-weighted centre of mass measured with
voxel indices estimates the true centre directly. Widths are Gaussian sigmas
in voxels. Brightness is set through the peak signal-to-noise ratio
``snr = peak / sqrt(background + read_noise**2)`` of the Gaussian at its
centre; the integrated intensity follows from the widths and stays constant
when a spot broadens.

Unless a scenario says otherwise: sigmas are drawn in [0.9, 1.2] voxels along
omega and [1.2, 1.8] along the two frame axes; centres keep two sigmas away
from the region's faces (paths reflect off that margin); the peak SNR is
``params.snr`` (default 20, far above a 5-sigma detection threshold) times a
per-spot factor in [0.8, 1.2].

Scenarios
---------
isolated
    One or two static spots, far apart (normalised separation >= 3). The
    trivially trackable case: any tracker should score ~1.0.
drifting
    Two spots, one per half of the axis1 range: spot 0 moves at a constant
    velocity (<= 1 voxel/scan in the frame plane, <= 0.15 along omega, scaled
    down so the straight path fits), spot 1 is a random walk (steps with
    sigma 0.4 voxel in the frame plane, 0.1 along omega, reflected at the margin).
broadening
    One or two near-static spots whose widths grow geometrically scan by scan
    (as under plastic deformation): x2 along the frame axes and x1.5 along omega
    over the experiment (at most +8 %/scan); integrated intensity is conserved,
    so the peak drops by up to a factor 6. Spots start at twice the usual peak
    SNR, so that the last scan's peak is still ~6.7 sigma at the default SNR.
crossing
    Two spots on straight lines at constant velocity that pass through each
    other at the middle scan (closest approach 0.2 voxel), overlapping (see
    truth.py) for several scans, then separate. Relative speed <= 1 voxel/scan
    along axis2 plus a small opposite drift along axis1, so the lines cross at
    an angle. Spot 1 is 0.7x as bright as spot 0. Identities are recoverable
    from motion (constant velocity) and from brightness.
merge_then_split
    Two spots approach along axis2, merge (closest 0.2 voxel) and stay merged
    for the middle third of the experiment, then split apart along axis1
    (spot 0, 1.7x brighter, goes towards +axis1). After the split only
    brightness tells the identities apart; the scenario tests the overlap and
    split hypotheses more than motion prediction.
appear_vanish
    Three static spots, one per third of the axis1 range: spot 0 lives
    throughout, spot 1 is born at scan S//3, spot 2 dies after scan 2S//3 - 1.
    Ground-truth records exist only while a spot is alive.
low_snr
    Two slowly drifting spots (0.2 voxel/scan) with peak SNR ``params.low_snr``
    (default 6): visible to a matched filter, marginal for a plain threshold.
dense
    ``params.dense_spots`` spots (default 8) drifting at random constant
    velocities (<= 0.4 voxel/scan, reflected at the margin) with intensities
    spread x0.6..x1.4, placed with normalised separation >= 0.75 at the first
    scan: overlaps are frequent. Too many spots for the region is an error.
wrapped
    Like drifting (one constant-velocity and one static spot), but the region's
    omega window runs through frame 0 (e.g. [1437, 7] with 1440 frames per
    scan): tests wrap-aware volume assembly. Coordinates are window indices.
zingers
    Two drifting spots (as drifting) plus cosmic-ray hits: about
    ``ZINGERS_PER_VOLUME`` per volume (Poisson), each one voxel or a streak of 2-3
    voxels inside one omega frame, 300 to 30,000 counts above the background,
    at new places every scan. Zingers are not truth.
powder_ring
    Two drifting spots on a powder ring: a band of diffuse intensity at one
    axis2 (2theta) position, Gaussian across (sigma 1-2 voxels), running along
    axis1 (eta, with a +-10 % modulation) and through every omega frame, its
    peak 4-8 noise sigmas: about as high as a weak spot. One spot's path
    crosses the ring.
diffuse
    Two drifting spots on a structured background: a broad hump along axis2
    (2theta; sigma 5-12 voxels, up to 15 noise sigmas high, centred anywhere
    near the region) and a level that changes with omega (the whole background
    x0.7..x1.3 from the first to the last frame of the window).
masked
    Two drifting spots seen through a detector with a gap and dead pixels: a
    column one or two voxels wide along axis1 at a fixed axis2, written as
    ``GAP_VALUE`` (-1) and crossed by one spot's path, and three dead pixels
    written as ``DEAD_VALUE`` (2^32 - 1), one of them on a spot's path. The
    experiment config lists both values under ``frames.mask.values``.
saturated
    Two drifting spots 10-40x brighter than usual, their cores clipped at
    ``SATURATION`` counts (a detector's full well): flat plateaus of several
    voxels. Truth keeps the unclipped centre and intensity.
noise_free
    Three drifting spots rendered without background or noise (expected
    counts only, as simple generators and thresholded detector data give),
    the region's brightness scaled by 10^u, u uniform in [-3, 6].
early_overlap
    Two spots that start almost on top of each other (normalised separation
    ~0.3) and separate over the first four scans, then drift apart slowly:
    overlapping from their first scans. Spot 1 is 0.6x as bright as spot 0.
decelerating_crossing
    Two identical spots (same widths and brightness) that approach each other
    along a 3D line and pass through each other while decelerating sharply:
    after the meeting point both move at a quarter of their speed.
    Only motion tells them apart, and constant-velocity prediction overshoots.
mixed
    Each region is an instance of one of the scenarios above, drawn from the
    seed: a realistic mix.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

SCENARIO_NAMES: tuple[str, ...] = (
    "isolated",
    "drifting",
    "broadening",
    "crossing",
    "merge_then_split",
    "appear_vanish",
    "low_snr",
    "dense",
    "wrapped",
    "zingers",
    "powder_ring",
    "diffuse",
    "masked",
    "saturated",
    "noise_free",
    "early_overlap",
    "decelerating_crossing",
    "mixed",
)
# Scenarios whose regions' omega windows wrap through frame 0.
WRAPPING_SCENARIOS = frozenset({"wrapped"})
# Ranges of a simulated spot's Gaussian sigma, in voxels: along omega, along the
# frame axes.
SIGMA_OMEGA = (0.9, 1.2)
SIGMA_FRAME = (1.2, 1.8)
# A spot's centre stays this many sigmas inside the region's faces.
MARGIN_SIGMAS = 2.0
BROADENING_SNR_FACTOR = 2.0  # start bright: the peak drops up to 6x as widths grow
DENSE_SPREAD = 0.7  # fraction of the frame plane the dense scenario uses
ZINGERS_PER_VOLUME = 4.0
ZINGER_COUNTS = (300.0, 30_000.0)  # log-uniform height above the background
GAP_VALUE = -1.0  # what the simulated detector writes into its gap column
DEAD_VALUE = float(2**32 - 1)  # ... and into dead pixels (the uint32 marker)
MASK_VALUES = (GAP_VALUE, DEAD_VALUE)
SATURATION = 2000.0  # counts: the simulated detector's full well
NOISE_FREE_SCALE = (-3.0, 6.0)  # log10 range of the noise_free regions' brightness


@dataclass(frozen=True)
class SimParams:
    """Knobs of the simulated detector and spots (stored in the ground truth).

    region_shape: (omega frames, axis1, axis2) of every region; default like
        real CHESS regions.
    frames_per_scan: omega frames of a full scan (window numbering wraps at it).
    background, background_slope: expected background counts
        ``background + slope[0] * i1 + slope[1] * i2`` at frame voxel (i1, i2).
    read_noise: Gaussian read-noise sigma in counts, added after Poisson noise.
    snr, low_snr: peak SNR of ordinary and low_snr spots (see module docstring).
    profile: "gaussian", or "pseudo-voigt" (a mix of the Gaussian and a product
        of 1D Lorentzians with the same FWHM, ``voigt_fraction`` Lorentzian).
    dense_spots: spots per region in the dense scenario.
    overlap_distance: normalised centre distance below which two true spots are
        overlapping (see truth.py).
    axes: names of the two frame axes.
    """

    region_shape: tuple[int, int, int] = (11, 35, 35)
    frames_per_scan: int = 1440
    background: float = 50.0
    background_slope: tuple[float, float] = (0.3, 0.3)
    read_noise: float = 2.0
    snr: float = 20.0
    low_snr: float = 6.0
    profile: str = "gaussian"
    voigt_fraction: float = 0.3
    dense_spots: int = 8
    overlap_distance: float = 1.0
    axes: tuple[str, str] = ("eta", "tth")

    @property
    def noise_sigma(self) -> float:
        """Noise standard deviation at the base background level, in counts."""
        return math.sqrt(self.background + self.read_noise**2)

    def validate(self) -> None:
        """Raise ValueError naming the first impossible parameter."""
        n_omega, n1, n2 = self.region_shape
        if min(self.region_shape) < 1:
            raise ValueError(f"region shape {self.region_shape} has a non-positive size")
        if n_omega < 5 or min(n1, n2) < 12:
            raise ValueError(
                f"region shape {self.region_shape} is too small for spots of these widths: "
                "need at least 5 omega frames and 12 x 12 pixels"
            )
        if self.frames_per_scan < n_omega:
            raise ValueError(
                f"frames_per_scan={self.frames_per_scan} is smaller than the region's "
                f"{n_omega} omega frames"
            )
        if self.background < 0 or self.read_noise < 0:
            raise ValueError("background and read_noise must be >= 0")
        if self.noise_sigma <= 0:
            raise ValueError("background and read_noise cannot both be 0 (SNR undefined)")
        if self.snr <= 0 or self.low_snr <= 0:
            raise ValueError("snr and low_snr must be > 0")
        if self.profile not in ("gaussian", "pseudo-voigt"):
            raise ValueError(f"profile must be gaussian or pseudo-voigt, got {self.profile!r}")
        if not 0.0 <= self.voigt_fraction <= 1.0:
            raise ValueError("voigt_fraction must be in [0, 1]")
        if self.dense_spots < 1:
            raise ValueError("dense_spots must be >= 1")
        if self.overlap_distance <= 0:
            raise ValueError("overlap_distance must be > 0")
        if len(self.axes) != 2 or "omega" in self.axes or self.axes[0] == self.axes[1]:
            raise ValueError(f"axes must be two distinct names other than omega, got {self.axes}")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SimParams:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in known}
        return cls(**values)


@dataclass(frozen=True)
class TrueSpot:
    """One true spot in one scan."""

    track_id: int
    position: np.ndarray  # (3,) omega, axis1, axis2
    sigma: np.ndarray  # (3,)
    intensity: float  # integrated counts over all space


@dataclass(frozen=True)
class Scene:
    """What a region's frames hold besides the spots of the truth (rendered every scan).

    ring: (axis2 centre, sigma, peak counts, eta modulation) of a powder ring, a
        band along axis1 through every omega frame, or None.
    hump: (axis2 centre, sigma, peak counts) of broad diffuse scattering, or None.
    omega_gain: the whole background is scaled by a factor going linearly from
        omega_gain[0] at the first frame to omega_gain[1] at the last.
    zingers: expected cosmic-ray hits per volume (Poisson), new places every scan.
    gap_columns: axis2 indices written as GAP_VALUE (every omega frame, all axis1).
    dead_pixels: (axis1, axis2) pixels written as DEAD_VALUE in every frame.
    saturation: counts at which the detector clips, or None.
    noise_free: expected spot counts only: no background, no noise.
    scale: factor on every spot's counts (noise_free brightness).
    """

    ring: tuple[float, float, float, float] | None = None
    hump: tuple[float, float, float] | None = None
    omega_gain: tuple[float, float] = (1.0, 1.0)
    zingers: float = 0.0
    gap_columns: tuple[int, ...] = ()
    dead_pixels: tuple[tuple[int, int], ...] = ()
    saturation: float | None = None
    noise_free: bool = False
    scale: float = 1.0

    @property
    def masked(self) -> bool:
        """Whether the frames carry marker values (gap columns or dead pixels)."""
        return bool(self.gap_columns or self.dead_pixels)


PLAIN = Scene()


@dataclass
class _Path:
    """A true track over the whole experiment (arrays indexed by scan offset)."""

    positions: np.ndarray  # (S, 3)
    sigmas: np.ndarray  # (S, 3)
    intensity: float
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))


@dataclass(frozen=True)
class RegionScenario:
    """A scenario instance: the true spots of every scan of one region."""

    name: str
    wraps: bool
    scans: tuple[tuple[TrueSpot, ...], ...]  # indexed by scan offset
    scene: Scene = PLAIN


Generator = Callable[[np.random.Generator, SimParams, int], list[_Path]]
Drawn = tuple[list[_Path], Scene]  # a scene scenario's paths and what else its frames hold
SceneGenerator = Callable[[np.random.Generator, SimParams, int], Drawn]


def _draw_sigma(rng: np.random.Generator) -> np.ndarray:
    return np.array(
        [rng.uniform(*SIGMA_OMEGA), rng.uniform(*SIGMA_FRAME), rng.uniform(*SIGMA_FRAME)]
    )


def _intensity(params: SimParams, sigma: np.ndarray, snr: float) -> float:
    """Integrated intensity whose Gaussian peak is snr noise sigmas."""
    return float(snr * params.noise_sigma * (2 * math.pi) ** 1.5 * np.prod(sigma))


def _bounds(params: SimParams, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest allowed centre per axis (MARGIN_SIGMAS from the faces)."""
    shape = np.asarray(params.region_shape, dtype=float)
    margin = MARGIN_SIGMAS * sigma
    lo, hi = margin, shape - 1 - margin
    if np.any(hi < lo):
        raise ValueError(
            f"region shape {params.region_shape} cannot hold a spot of sigma "
            f"{np.round(sigma, 2).tolist()} with a {MARGIN_SIGMAS}-sigma margin"
        )
    return lo, hi


def _reflect(x: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fold x back into [lo, hi] as a ball bouncing off the walls."""
    span = np.maximum(hi - lo, 1e-9)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _constant(values: np.ndarray, n_scans: int) -> np.ndarray:
    return np.tile(values, (n_scans, 1))


def _linear(start: np.ndarray, velocity: np.ndarray, n_scans: int) -> np.ndarray:
    return start[None, :] + np.arange(n_scans)[:, None] * velocity[None, :]


def _path(positions: np.ndarray, sigma: np.ndarray, intensity: float) -> _Path:
    n = len(positions)
    return _Path(positions, _constant(sigma, n), intensity, np.ones(n, dtype=bool))


def _snr(params: SimParams, rng: np.random.Generator) -> float:
    return params.snr * rng.uniform(0.8, 1.2)


def _sub_bounds(lo: np.ndarray, hi: np.ndarray, part: int, parts: int) -> tuple:
    """Split the axis1 range into `parts` bands with a gap; return band `part`."""
    width = (hi[1] - lo[1]) / parts
    sub_lo, sub_hi = lo.copy(), hi.copy()
    sub_lo[1] = lo[1] + part * width + 0.15 * width
    sub_hi[1] = lo[1] + (part + 1) * width - 0.15 * width
    return sub_lo, sub_hi


def _isolated(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    n_spots = int(rng.integers(1, 3))
    paths: list[_Path] = []
    for part in range(n_spots):
        sigma = _draw_sigma(rng)
        lo, hi = _sub_bounds(*_bounds(params, sigma), part, n_spots)
        centre = rng.uniform(lo, hi)
        paths.append(
            _path(_constant(centre, n_scans), sigma, _intensity(params, sigma, _snr(params, rng)))
        )
    return paths


def _straight(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, n_scans: int, max_speed: np.ndarray
) -> np.ndarray:
    """A constant-velocity path that stays in [lo, hi] for n_scans."""
    span = hi - lo
    direction = rng.choice([-1.0, 1.0], size=3)
    speed = np.minimum(max_speed * rng.uniform(0.5, 1.0, size=3), 0.9 * span / max(n_scans - 1, 1))
    velocity = direction * speed
    travel = velocity * (n_scans - 1)
    start_lo = np.where(velocity >= 0, lo, lo - travel)
    start_hi = np.where(velocity >= 0, hi - travel, hi)
    start = rng.uniform(start_lo, np.maximum(start_hi, start_lo))
    return _linear(start, velocity, n_scans)


def _random_walk(
    rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray, n_scans: int, step: np.ndarray
) -> np.ndarray:
    start = rng.uniform(lo, hi)
    steps = rng.normal(0.0, 1.0, size=(n_scans, 3)) * step
    steps[0] = 0.0
    return _reflect(start + np.cumsum(steps, axis=0), lo, hi)


def _drifting(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    paths = []
    sigma = _draw_sigma(rng)
    lo, hi = _sub_bounds(*_bounds(params, sigma), 0, 2)
    positions = _straight(rng, lo, hi, n_scans, np.array([0.15, 0.7, 0.7]))
    paths.append(_path(positions, sigma, _intensity(params, sigma, _snr(params, rng))))
    sigma = _draw_sigma(rng)
    lo, hi = _sub_bounds(*_bounds(params, sigma), 1, 2)
    positions = _random_walk(rng, lo, hi, n_scans, np.array([0.1, 0.4, 0.4]))
    paths.append(_path(positions, sigma, _intensity(params, sigma, _snr(params, rng))))
    return paths


def _broadening(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    n_spots = int(rng.integers(1, 3))
    steps = max(n_scans - 1, 1)
    growth = np.array([min(1.5 ** (1 / steps), 1.08), *[min(2.0 ** (1 / steps), 1.08)] * 2])
    paths = []
    for part in range(n_spots):
        sigma0 = _draw_sigma(rng)
        sigmas = sigma0[None, :] * growth[None, :] ** np.arange(n_scans)[:, None]
        lo, hi = _sub_bounds(*_bounds(params, sigmas[-1]), part, n_spots)
        positions = _straight(rng, lo, hi, n_scans, np.array([0.02, 0.1, 0.1]))
        intensity = _intensity(params, sigma0, BROADENING_SNR_FACTOR * _snr(params, rng))
        paths.append(_Path(positions, sigmas, intensity, np.ones(n_scans, dtype=bool)))
    return paths


def _pair_sigmas(rng: np.random.Generator, params: SimParams) -> tuple[np.ndarray, np.ndarray]:
    return _draw_sigma(rng), _draw_sigma(rng)


def _crossing(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    sigma_a, sigma_b = _pair_sigmas(rng, params)
    lo_a, hi_a = _bounds(params, sigma_a)
    lo_b, hi_b = _bounds(params, sigma_b)
    lo, hi = np.maximum(lo_a, lo_b), np.minimum(hi_a, hi_b)
    centre = (lo + hi) / 2 + rng.uniform(-1.0, 1.0, size=3) * np.array([0.5, 2.0, 2.0])
    centre = np.clip(centre, lo, hi)
    half = max((n_scans - 1) / 2, 0.5)
    room = np.minimum(centre - lo, hi - centre)
    # per-spot speed along (omega, axis1, axis2): mostly axis2, a little axis1
    speed = np.minimum(np.array([0.03, 0.12, 0.8]), 0.95 * room / half)
    t = np.arange(n_scans) - (n_scans - 1) / 2
    offset = np.array([0.0, 0.1, 0.0])
    a = centre + offset + t[:, None] * speed[None, :]
    b = centre - offset - t[:, None] * speed[None, :]
    snr = _snr(params, rng)
    return [
        _path(a, sigma_a, _intensity(params, sigma_a, snr)),
        _path(b, sigma_b, _intensity(params, sigma_b, 0.7 * snr)),
    ]


def _merge_then_split(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    sigma_a, sigma_b = _pair_sigmas(rng, params)
    lo = np.maximum(_bounds(params, sigma_a)[0], _bounds(params, sigma_b)[0])
    hi = np.minimum(_bounds(params, sigma_a)[1], _bounds(params, sigma_b)[1])
    centre = (lo + hi) / 2 + rng.uniform(-1.0, 1.0, size=3) * np.array([0.5, 2.0, 2.0])
    centre = np.clip(centre, lo, hi)
    merge_start = n_scans // 3
    merge_end = max(merge_start, (2 * n_scans) // 3 - 1)  # inclusive, merged scans
    room = np.minimum(centre - lo, hi - centre)
    speed_in = min(1.0, 0.95 * room[2] / max(merge_start, 1))
    speed_out = min(1.0, 0.95 * room[1] / max(n_scans - 1 - merge_end, 1))
    a = np.empty((n_scans, 3))
    b = np.empty((n_scans, 3))
    for i in range(n_scans):
        pa = centre.copy()
        pb = centre.copy()
        if i < merge_start:
            pa[2] -= speed_in * (merge_start - i)
            pb[2] += speed_in * (merge_start - i)
        elif i > merge_end:
            pa[1] += speed_out * (i - merge_end)
            pb[1] -= speed_out * (i - merge_end)
        a[i] = pa + np.array([0.0, 0.1, 0.0])
        b[i] = pb - np.array([0.0, 0.1, 0.0])
    snr = _snr(params, rng)
    return [
        _path(a, sigma_a, _intensity(params, sigma_a, snr)),
        _path(b, sigma_b, _intensity(params, sigma_b, snr / 1.7)),
    ]


def _appear_vanish(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    paths = []
    births = [0, n_scans // 3, 0]
    deaths = [n_scans - 1, n_scans - 1, max((2 * n_scans) // 3 - 1, 0)]
    for part in range(3):
        sigma = _draw_sigma(rng)
        lo, hi = _sub_bounds(*_bounds(params, sigma), part, 3)
        path = _path(_constant(rng.uniform(lo, hi), n_scans), sigma, 0.0)
        path.intensity = _intensity(params, sigma, _snr(params, rng))
        alive = np.zeros(n_scans, dtype=bool)
        alive[births[part] : deaths[part] + 1] = True
        path.alive = alive
        paths.append(path)
    return paths


def _low_snr(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    paths = []
    for part in range(2):
        sigma = _draw_sigma(rng)
        lo, hi = _sub_bounds(*_bounds(params, sigma), part, 2)
        positions = _straight(rng, lo, hi, n_scans, np.array([0.05, 0.2, 0.2]))
        snr = params.low_snr * rng.uniform(0.9, 1.1)
        paths.append(_path(positions, sigma, _intensity(params, sigma, snr)))
    return paths


def _normalised_distance(p: np.ndarray, q: np.ndarray, s: np.ndarray, t: np.ndarray) -> float:
    return float(np.linalg.norm((p - q) / (s + t)))


def _dense_bounds(params: SimParams, sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The central part of the frame plane, so that spots meet often."""
    lo, hi = _bounds(params, sigma)
    centre, half = (lo + hi) / 2, (hi - lo) / 2
    half[1:] *= DENSE_SPREAD
    return centre - half, centre + half


def _dense(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    n_spots = params.dense_spots
    shape = np.asarray(params.region_shape, dtype=float)
    # a spot needs roughly a (2 sigma)^3 box to itself at separation 0.75
    footprint = np.prod(2 * np.array([SIGMA_OMEGA[0], SIGMA_FRAME[0], SIGMA_FRAME[0]]))
    usable_span = shape - 1 - 2 * MARGIN_SIGMAS * np.array([1.2, 1.8, 1.8])
    usable = np.prod(np.maximum(usable_span * np.array([1.0, DENSE_SPREAD, DENSE_SPREAD]), 0))
    if n_spots * footprint > usable:
        raise ValueError(
            f"dense: {n_spots} spots do not fit in a region of shape {params.region_shape} "
            f"(room for about {int(usable // footprint)})"
        )
    sigmas: list[np.ndarray] = []
    starts: list[np.ndarray] = []
    for _ in range(n_spots):
        sigma = _draw_sigma(rng)
        lo, hi = _dense_bounds(params, sigma)
        for _attempt in range(500):
            p = rng.uniform(lo, hi)
            if all(
                _normalised_distance(p, q, sigma, s) >= 0.75
                for q, s in zip(starts, sigmas, strict=True)
            ):
                break
        else:
            raise ValueError(
                f"dense: cannot place {n_spots} spots in a region of shape "
                f"{params.region_shape}: more spots than fit"
            )
        sigmas.append(sigma)
        starts.append(p)
    paths = []
    for sigma, start in zip(sigmas, starts, strict=True):
        lo, hi = _dense_bounds(params, sigma)
        velocity = rng.uniform(-1, 1, size=3) * np.array([0.08, 0.4, 0.4])
        positions = _reflect(_linear(start, velocity, n_scans), lo, hi)
        snr = params.snr * rng.uniform(0.6, 1.4)
        paths.append(_path(positions, sigma, _intensity(params, sigma, snr)))
    return paths


def _wrapped(rng: np.random.Generator, params: SimParams, n_scans: int) -> list[_Path]:
    sigma = _draw_sigma(rng)
    lo, hi = _sub_bounds(*_bounds(params, sigma), 0, 2)
    moving = _straight(rng, lo, hi, n_scans, np.array([0.15, 0.7, 0.7]))
    paths = [_path(moving, sigma, _intensity(params, sigma, _snr(params, rng)))]
    sigma = _draw_sigma(rng)
    lo, hi = _sub_bounds(*_bounds(params, sigma), 1, 2)
    # keep the static spot across the wrap point (frame F-1 -> 0 is near index 2..3)
    centre = rng.uniform(lo, hi)
    centre[0] = float(np.clip(3.0, lo[0], hi[0]))
    paths.append(
        _path(_constant(centre, n_scans), sigma, _intensity(params, sigma, _snr(params, rng)))
    )
    return paths


def _zingers(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    return _drifting(rng, params, n_scans), Scene(zingers=ZINGERS_PER_VOLUME)


def _on_path(rng: np.random.Generator, path: _Path) -> np.ndarray:
    """The position of a path at a random scan (a place the spot visits)."""
    return path.positions[int(rng.integers(len(path.positions)))]


def _powder_ring(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    paths = _drifting(rng, params, n_scans)
    centre = float(_on_path(rng, paths[0])[2])
    ring = (
        centre,
        float(rng.uniform(1.0, 2.0)),
        float(rng.uniform(4.0, 8.0) * params.noise_sigma),
        float(rng.uniform(0.0, 0.1)),
    )
    return paths, Scene(ring=ring)


def _diffuse(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    paths = _drifting(rng, params, n_scans)
    n2 = params.region_shape[2]
    hump = (
        float(rng.uniform(-5.0, n2 + 5.0)),
        float(rng.uniform(5.0, 12.0)),
        float(rng.uniform(5.0, 15.0) * params.noise_sigma),
    )
    gain = (float(rng.uniform(0.7, 1.0)), float(rng.uniform(1.0, 1.3)))
    if rng.uniform() < 0.5:
        gain = gain[::-1]
    return paths, Scene(hump=hump, omega_gain=gain)


def _masked(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    paths = _drifting(rng, params, n_scans)
    _, n1, n2 = params.region_shape
    gap = round(float(_on_path(rng, paths[0])[2]))
    columns = tuple(range(gap, min(gap + int(rng.integers(1, 3)), n2)))
    on_spot = paths[1].positions[0]
    dead = [(round(float(on_spot[1])), round(float(on_spot[2])))]
    while len(dead) < 3:
        pixel = (int(rng.integers(n1)), int(rng.integers(n2)))
        if pixel not in dead and pixel[1] not in columns:
            dead.append(pixel)
    return paths, Scene(gap_columns=columns, dead_pixels=tuple(dead))


def _saturated(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    paths = _drifting(rng, params, n_scans)
    for path in paths:
        path.intensity *= float(rng.uniform(15.0, 50.0))
    return paths, Scene(saturation=SATURATION)


def _noise_free(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    paths = []
    for part in range(3):
        sigma = _draw_sigma(rng)
        lo, hi = _sub_bounds(*_bounds(params, sigma), part, 3)
        positions = _straight(rng, lo, hi, n_scans, np.array([0.1, 0.5, 0.5]))
        snr = params.snr * rng.uniform(0.3, 1.0)
        paths.append(_path(positions, sigma, _intensity(params, sigma, snr)))
    peak = 10.0 ** rng.uniform(*NOISE_FREE_SCALE)
    return paths, Scene(noise_free=True, scale=peak / (params.snr * params.noise_sigma))


def _early_overlap(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    sigma_a, sigma_b = _pair_sigmas(rng, params)
    lo = np.maximum(_bounds(params, sigma_a)[0], _bounds(params, sigma_b)[0])
    hi = np.minimum(_bounds(params, sigma_a)[1], _bounds(params, sigma_b)[1])
    centre = (lo + hi) / 2 + rng.uniform(-1.0, 1.0, size=3) * np.array([0.5, 1.5, 1.5])
    angle = rng.uniform(0.0, 2 * math.pi)
    direction = np.array([rng.uniform(-0.1, 0.1), math.cos(angle), math.sin(angle)])
    direction /= np.linalg.norm(direction)
    scale = sigma_a + sigma_b  # one unit of normalised separation, per axis
    # normalised separation: 0.3 at the first scan, +0.3 per scan for six scans,
    # then +0.1 per scan, as far as the region allows
    t = np.arange(n_scans, dtype=float)
    sep = 0.3 + 0.3 * np.minimum(t, 6.0) + 0.1 * np.maximum(t - 6.0, 0.0)
    half = np.abs(direction * scale) / 2
    room = np.minimum(centre - lo, hi - centre)
    limit = float(np.min(np.where(half > 1e-9, room / np.maximum(half, 1e-9), np.inf)))
    sep = np.minimum(sep, 0.95 * limit)
    offset = (sep[:, None] * direction[None, :] * scale[None, :]) / 2
    snr = _snr(params, rng)
    return [
        _path(centre + offset, sigma_a, _intensity(params, sigma_a, snr)),
        _path(centre - offset, sigma_b, _intensity(params, sigma_b, 0.6 * snr)),
    ], PLAIN


def _decelerating_crossing(rng: np.random.Generator, params: SimParams, n_scans: int) -> Drawn:
    sigma = _draw_sigma(rng)
    lo, hi = _bounds(params, sigma)
    centre = (lo + hi) / 2 + rng.uniform(-1.0, 1.0, size=3) * np.array([0.5, 2.0, 2.0])
    direction = np.array([rng.uniform(-0.2, 0.2), rng.uniform(-1, 1), rng.uniform(-1, 1)])
    direction /= np.linalg.norm(direction)
    meet = (n_scans - 1) * rng.uniform(0.35, 0.55)
    slow = 0.25
    t = np.arange(n_scans, dtype=float) - meet
    travel = np.where(t < 0, t, slow * t)  # in units of the early speed
    reach = max(float(np.max(np.abs(travel))), 0.5)
    room = np.minimum(centre - lo, hi - centre)
    limit = float(np.min(np.where(np.abs(direction) > 1e-9, room / np.abs(direction), np.inf)))
    speed = min(rng.uniform(0.5, 0.9), 0.95 * limit / reach)
    side = np.array([0.0, 0.1, 0.0])
    a = centre + side + travel[:, None] * speed * direction[None, :]
    b = centre - side - travel[:, None] * speed * direction[None, :]
    intensity = _intensity(params, sigma, _snr(params, rng))
    return [_path(a, sigma, intensity), _path(b, sigma, intensity)], PLAIN


_GENERATORS: dict[str, Generator] = {
    "isolated": _isolated,
    "drifting": _drifting,
    "broadening": _broadening,
    "crossing": _crossing,
    "merge_then_split": _merge_then_split,
    "appear_vanish": _appear_vanish,
    "low_snr": _low_snr,
    "dense": _dense,
    "wrapped": _wrapped,
}
_SCENE_GENERATORS: dict[str, SceneGenerator] = {
    "zingers": _zingers,
    "powder_ring": _powder_ring,
    "diffuse": _diffuse,
    "masked": _masked,
    "saturated": _saturated,
    "noise_free": _noise_free,
    "early_overlap": _early_overlap,
    "decelerating_crossing": _decelerating_crossing,
}


def check_scenario_names(names: list[str]) -> list[str]:
    """Return the names if all are known, else raise ValueError listing the known ones."""
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown:
        raise ValueError(
            f"unknown scenario {', '.join(repr(n) for n in unknown)}; "
            f"known scenarios: {', '.join(SCENARIO_NAMES)}"
        )
    return names


def region_scenario(
    name: str, seed: int, region_id: int, n_scans: int, params: SimParams
) -> RegionScenario:
    """The deterministic instance of scenario `name` for one region."""
    check_scenario_names([name])
    if n_scans < 1:
        raise ValueError(f"need at least one scan, got {n_scans}")
    if name == "mixed":
        pick = np.random.default_rng([seed, region_id, 7])
        name = str(pick.choice([n for n in SCENARIO_NAMES if n != "mixed"]))
    rng = np.random.default_rng([seed, region_id, SCENARIO_NAMES.index(name)])
    if name in _SCENE_GENERATORS:
        paths, scene = _SCENE_GENERATORS[name](rng, params, n_scans)
    else:
        paths, scene = _GENERATORS[name](rng, params, n_scans), PLAIN
    scans = []
    for i in range(n_scans):
        spots = tuple(
            TrueSpot(tid, path.positions[i].copy(), path.sigmas[i].copy(), path.intensity)
            for tid, path in enumerate(paths)
            if path.alive[i]
        )
        scans.append(spots)
    return RegionScenario(name, name in WRAPPING_SCENARIOS, tuple(scans), scene)
