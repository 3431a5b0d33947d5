"""Render a region volume: analytic spot profiles on a sloped background, with noise.

Profiles are axis-aligned and separable, so the exact integral of a spot over
a voxel is the product of three 1D integrals (differences of the CDF at the
voxel's faces). That is both exact (no sampling bias for narrow spots) and fast:
three short vectors and an outer product, restricted to the spot's bounding
box (+-5 sigma; the whole region for the heavy-tailed Lorentzian part of a
pseudo-Voigt).

Noise: the expected counts are Poisson-sampled, then Gaussian read noise is
added, so the noise grows with the signal as on a real detector.

A region's `Scene` adds what is not truth, in the order a detector makes it:
structured background (powder ring, diffuse hump, a level changing with
omega) under the spots, then noise, then zingers (cosmic rays hit the sensor,
after the photons), then saturation, and finally the marker values of gap
columns and dead pixels. A noise-free scene renders the spots' expected
counts only. The scene's random draws come after the noise draws, so a
region without a scene renders exactly as before.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
from scipy.special import ndtr

from mpitrack.sim.scenarios import (
    DEAD_VALUE,
    GAP_VALUE,
    PLAIN,
    ZINGER_COUNTS,
    Scene,
    SimParams,
    TrueSpot,
)

# A spot is rendered into a box of this many sigmas about its centre (a few
# parts per million of the Gaussian's mass fall outside it).
BOX_SIGMAS = 5.0
_SQRT_2LN2 = math.sqrt(2 * math.log(2))


def _gauss_1d(lo: int, hi: int, centre: float, sigma: float) -> np.ndarray:
    """Fraction of a unit 1D Gaussian inside each voxel lo..hi-1."""
    edges = (np.arange(lo, hi + 1) - 0.5 - centre) / sigma
    return np.diff(ndtr(edges))


def _lorentz_1d(lo: int, hi: int, centre: float, gamma: float) -> np.ndarray:
    """Fraction of a unit 1D Lorentzian (half width gamma) inside each voxel lo..hi-1."""
    edges = (np.arange(lo, hi + 1) - 0.5 - centre) / gamma
    return np.diff(np.arctan(edges)) / math.pi


def _box(shape: tuple[int, ...], centre: np.ndarray, reach: np.ndarray) -> list[tuple[int, int]]:
    out = []
    for n, c, r in zip(shape, centre, reach, strict=True):
        lo = max(0, math.floor(c - r))
        hi = min(n, math.ceil(c + r) + 1)
        out.append((lo, hi))
    return out


def add_spot(
    volume: np.ndarray, spot: TrueSpot, profile: str = "gaussian", fraction: float = 0.0
) -> None:
    """Add the spot's expected counts per voxel to `volume` in place."""
    shape = volume.shape
    if profile == "pseudo-voigt" and fraction > 0:
        parts = [(1.0 - fraction, "gaussian"), (fraction, "lorentz")]
    else:
        parts = [(1.0, "gaussian")]
    for weight, kind in parts:
        if weight <= 0:
            continue
        if kind == "gaussian":
            box = _box(shape, spot.position, BOX_SIGMAS * spot.sigma)
            funcs = [
                _gauss_1d(lo, hi, c, s)
                for (lo, hi), c, s in zip(box, spot.position, spot.sigma, strict=True)
            ]
        else:
            box = [(0, n) for n in shape]
            funcs = [
                _lorentz_1d(lo, hi, c, s * _SQRT_2LN2)
                for (lo, hi), c, s in zip(box, spot.position, spot.sigma, strict=True)
            ]
        if any(hi <= lo for lo, hi in box):
            continue
        block = (weight * spot.intensity) * (
            funcs[0][:, None, None] * funcs[1][None, :, None] * funcs[2][None, None, :]
        )
        volume[box[0][0] : box[0][1], box[1][0] : box[1][1], box[2][0] : box[2][1]] += block


def background(params: SimParams) -> np.ndarray:
    """Expected background counts of one region volume."""
    n_omega, n1, n2 = params.region_shape
    s1, s2 = params.background_slope
    frame = params.background + s1 * np.arange(n1)[:, None] + s2 * np.arange(n2)[None, :]
    return np.broadcast_to(frame, (n_omega, n1, n2)).astype(np.float64)


def scene_background(params: SimParams, scene: Scene) -> np.ndarray:
    """Expected background counts with the scene's structure (ring, hump, omega level)."""
    volume = background(params).copy()
    n_omega, n1, n2 = params.region_shape
    tth = np.arange(n2, dtype=np.float64)
    if scene.ring is not None:
        centre, sigma, peak, modulation = scene.ring
        across = peak * np.exp(-0.5 * ((tth - centre) / sigma) ** 2)
        along = 1.0 + modulation * np.sin(2 * math.pi * np.arange(n1) / max(n1, 1))
        volume += along[None, :, None] * across[None, None, :]
    if scene.hump is not None:
        centre, sigma, peak = scene.hump
        volume += peak * np.exp(-0.5 * ((tth - centre) / sigma) ** 2)[None, None, :]
    g0, g1 = scene.omega_gain
    if (g0, g1) != (1.0, 1.0):
        volume *= np.linspace(g0, g1, n_omega)[:, None, None]
    return volume


def expected_volume(
    params: SimParams, spots: Iterable[TrueSpot], scene: Scene = PLAIN
) -> np.ndarray:
    """Noise-free expected counts: background (none for a noise-free scene) plus every spot."""
    if scene.noise_free:
        volume = np.zeros(params.region_shape, dtype=np.float64)
    elif scene == PLAIN:
        volume = background(params).copy()
    else:
        volume = scene_background(params, scene)
    signal = np.zeros(params.region_shape, dtype=np.float64) if scene.scale != 1.0 else volume
    for spot in spots:
        add_spot(signal, spot, params.profile, params.voigt_fraction)
    if signal is not volume:
        volume += scene.scale * signal
    return volume


def _add_zingers(counts: np.ndarray, expected: float, rng: np.random.Generator) -> None:
    """Cosmic-ray hits: single voxels or 2-3 voxel streaks inside one omega frame."""
    n_omega, n1, n2 = counts.shape
    lo, hi = np.log(ZINGER_COUNTS[0]), np.log(ZINGER_COUNTS[1])
    steps = ((0, 1), (1, 0), (1, 1), (1, -1))
    for _ in range(int(rng.poisson(expected))):
        w, i, j = int(rng.integers(n_omega)), int(rng.integers(n1)), int(rng.integers(n2))
        length = int(rng.choice([1, 1, 1, 2, 3]))
        di, dj = steps[int(rng.integers(len(steps)))]
        height = float(np.exp(rng.uniform(lo, hi)))
        for k in range(length):
            a, b = i + k * di, j + k * dj
            if 0 <= a < n1 and 0 <= b < n2:
                counts[w, a, b] += height * float(rng.uniform(0.5, 1.0))


def render_volume(
    params: SimParams,
    spots: Iterable[TrueSpot],
    rng: np.random.Generator,
    scene: Scene = PLAIN,
) -> np.ndarray:
    """A noisy float32 volume (omega, axis1, axis2) of the given spots in their scene."""
    mu = expected_volume(params, spots, scene)
    if scene.noise_free:
        counts = mu.astype(np.float32)
    else:
        counts = rng.poisson(mu).astype(np.float32)
        if params.read_noise > 0:
            counts += rng.normal(0.0, params.read_noise, size=mu.shape).astype(np.float32)
    if scene.zingers > 0:
        _add_zingers(counts, scene.zingers, rng)
    if scene.saturation is not None:
        np.minimum(counts, np.float32(scene.saturation), out=counts)
    for column in scene.gap_columns:
        counts[:, :, column] = GAP_VALUE
    for i, j in scene.dead_pixels:
        counts[:, i, j] = DEAD_VALUE
    return counts
