"""Named, JSON-ready features of detected spots.

Detection hands over numbers (moments, bounding boxes); this module turns them
into the ``features`` dict stored as a measurement's JSONB and into `Spot`.
Features are keyed by axis name, never by position in an implicit order,
because the stored rows outlive any particular array layout: a statistics
query asks for ``features->'sigma'->>'tth'``, not for element 2 of a list.

Conventions (shared by every feature):

- Coordinates are region-local voxel indices in the order (omega, axis1, axis2);
  a voxel's coordinate is its index, so a spot centred on voxel 3 has position 3.0.
- Moments are intensity-weighted with the background-subtracted values. Values
  are not clipped at zero: clipping would bias centres and widths towards the
  noisy tails; the covariance is projected onto the nearest positive
  semi-definite matrix instead, so widths are always real.
- ``fwhm`` is ``2*sqrt(2*ln 2) * sigma`` (2.3548 sigma), the Gaussian value. A
  width measured from a 1D profile would need interpolation between a handful
  of voxels and is noisier than the second moment for spots a few voxels wide.
- Every value is a plain ``int``, ``float``, ``bool``, ``list`` or ``dict`` and is
  finite (no NaN or inf), so ``json.dumps(features, allow_nan=False)`` succeeds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpitrack.track.spot import Spot

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# Below this, an eigenvalue or variance is numerical noise from the one-pass
# moment formula, not a width; reporting it as exactly 0 keeps single-voxel
# spots clean.
_TINY_VARIANCE = 1e-12


@dataclass(frozen=True)
class Moments:
    """Intensity moments of several spots at once (row i = spot i).

    total: sum of the weights, shape (n,).
    mean: weighted centre, shape (n, 3).
    covariance: weighted covariance of the coordinates, shape (n, 3, 3), symmetric
        but not yet projected onto PSD (see `psd_covariance`).
    count: voxels per label, shape (n,).
    spread: unweighted sum over the voxels of (x - mean)**2 per axis, shape (n, 3):
        with background noise sigma, the centre's standard error is
        sigma * sqrt(spread) / total (see `centre_errors`).
    """

    total: np.ndarray
    mean: np.ndarray
    covariance: np.ndarray
    count: np.ndarray
    spread: np.ndarray


def label_moments(labels: np.ndarray, weights: np.ndarray, n_labels: int) -> Moments:
    """Moments of every label 1..n_labels of a labelled volume in one vectorised pass.

    Uses ``np.bincount`` over the labelled voxels only (ten weighted sums), so the
    cost does not grow with the number of spots. Coordinates are centred on the
    volume's middle before the sums to keep the one-pass variance formula away
    from cancellation. A label with total weight <= 0 gets mean and covariance 0
    (the caller drops such spots).
    """
    shape = labels.shape
    flat_index = np.flatnonzero(labels)
    lab = labels.ravel()[flat_index]
    w = np.asarray(weights, dtype=np.float64).ravel()[flat_index]
    centre = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    coords = [
        c.astype(np.float64) - centre[k] for k, c in enumerate(np.unravel_index(flat_index, shape))
    ]
    m = n_labels + 1

    def wsum(values: np.ndarray) -> np.ndarray:
        return np.bincount(lab, weights=values, minlength=m)[1:]

    total = wsum(w)
    safe = np.where(total > 0, total, 1.0)
    mean = np.empty((n_labels, 3))
    wc = []
    for k in range(3):
        wk = w * coords[k]
        wc.append(wk)
        mean[:, k] = wsum(wk) / safe
    cov = np.empty((n_labels, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            second = wsum(wc[i] * coords[j]) / safe
            cov[:, i, j] = cov[:, j, i] = second - mean[:, i] * mean[:, j]
    count = np.bincount(lab, minlength=m)[1:].astype(np.float64)
    spread = np.empty((n_labels, 3))
    for k in range(3):
        s1, s2 = wsum(coords[k]), wsum(coords[k] * coords[k])
        spread[:, k] = np.maximum(s2 - 2.0 * mean[:, k] * s1 + count * mean[:, k] ** 2, 0.0)
    mean += centre
    bad = total <= 0
    mean[bad] = 0.0
    cov[bad] = 0.0
    spread[bad] = 0.0
    return Moments(total=total, mean=mean, covariance=cov, count=count, spread=spread)


def centre_errors(spread: np.ndarray, total: np.ndarray, noise: float) -> np.ndarray:
    """Standard error of intensity-weighted centres from background noise alone.

    A voxel's value error dv moves the centre by dv * (x - mean) / total, so with
    independent noise sigma the variance is sigma**2 * sum((x - mean)**2) /
    total**2. Shot noise of the spot itself is not included (the detector gain
    is unknown here), so this is a lower bound for bright spots.
    """
    total = np.asarray(total, dtype=np.float64)
    safe = np.where(total > 0, total, np.inf)
    return noise * np.sqrt(np.asarray(spread, dtype=np.float64)) / safe[..., None]


def voxel_moments(values: np.ndarray, coords: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Total, centre (3,) and covariance (3, 3) of one spot given its voxels.

    values: shape (n,), background-subtracted; coords: shape (n, 3) voxel indices.
    Raises ValueError when the total is not positive (no meaningful centre).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    coords = np.asarray(coords, dtype=np.float64)
    if coords.ndim != 2 or coords.shape != (values.size, 3):
        raise ValueError(f"coords must have shape ({values.size}, 3), got {coords.shape}")
    total = float(values.sum())
    if not total > 0:
        raise ValueError(f"spot intensity {total!r} is not positive; no centre of mass")
    mean = values @ coords / total
    d = coords - mean
    cov = (d * values[:, None]).T @ d / total
    return total, mean, (cov + cov.T) / 2.0


def psd_covariance(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest PSD covariance, its eigenvalues (descending) and eigenvectors (rows).

    Works on one (3, 3) matrix or a stack (n, 3, 3). Unclipped weights can make a
    faint spot's sample covariance slightly indefinite; negative eigenvalues are
    set to 0. Each eigenvector's sign is fixed (largest-magnitude component
    positive) so the stored principal axes do not flip between runs.
    """
    cov = np.asarray(cov, dtype=np.float64)
    sym = (cov + np.swapaxes(cov, -1, -2)) / 2.0
    evals, evecs = np.linalg.eigh(sym)  # ascending, vectors in columns
    evals = np.where(evals > _TINY_VARIANCE, evals, 0.0)[..., ::-1]
    axes = np.swapaxes(evecs[..., ::-1], -1, -2).copy()  # rows, descending
    dominant = np.take_along_axis(axes, np.argmax(np.abs(axes), axis=-1)[..., None], axis=-1)
    axes *= np.where(dominant < 0, -1.0, 1.0)
    psd = np.swapaxes(axes, -1, -2) @ (evals[..., :, None] * axes)
    return (psd + np.swapaxes(psd, -1, -2)) / 2.0, evals, axes


def axis_names(axes: Sequence[str]) -> tuple[str, str, str]:
    """("omega", axis1, axis2), checking that the frame axis names are usable keys."""
    if len(axes) != 2 or not all(isinstance(a, str) and a for a in axes):
        raise ValueError(f"axes must be two non-empty names, got {tuple(axes)!r}")
    if axes[0] == axes[1] or "omega" in axes:
        raise ValueError(f"axes {tuple(axes)!r}: need two distinct names, not 'omega'")
    return ("omega", axes[0], axes[1])


def _check_finite(name: str, values: np.ndarray) -> None:
    """Guard the JSON contract: a NaN/inf here is a bug upstream, not a feature value."""
    if not np.all(np.isfinite(values)):
        raise ValueError(f"non-finite {name} in spot features: {values!r}")


def build_spots(
    *,
    positions: np.ndarray,
    covariances: np.ndarray,
    intensities: np.ndarray,
    peaks: np.ndarray,
    n_voxels: np.ndarray,
    bboxes: np.ndarray,
    shape: Sequence[int],
    axes: Sequence[str] = ("eta", "tth"),
    noise: float | None = None,
    origin: Mapping[str, float] | None = None,
    step: Mapping[str, float] | None = None,
    position_errors: np.ndarray | None = None,
    intensity_errors: np.ndarray | None = None,
    masked_voxels: np.ndarray | None = None,
) -> list[Spot]:
    """Spots with numeric pieces and named features, n at a time.

    positions (n, 3), covariances (n, 3, 3): voxel units, order (omega, axis1, axis2).
    intensities, peaks, n_voxels: shape (n,).
    bboxes (n, 3, 2): inclusive [lo, hi] voxel index per axis of each spot's
        detection mask.
    shape: the region volume's shape, for ``touches_boundary`` (a spot cut by the
        region's edge has a biased centre and intensity; consumers should know).
    noise: the volume's noise sigma; adds ``peak_snr`` when positive.
    origin, step: per-axis physical origin and step (degrees), keyed by axis
        name; when both are given, ``physical`` holds position, sigma and fwhm in
        those units (position = origin + step * voxel, no modulo 360).
    position_errors (n, 3), intensity_errors (n,): standard errors from the
        background noise (see `centre_errors`), stored when given.
    masked_voxels (n,): voxels of each spot's integration region without a
        measurement (their values are interpolated), stored when given.

    Feature keys: position, intensity, peak, n_voxels, bbox, bbox_size,
    bbox_centre, sigma, fwhm, covariance (PSD, nested lists), principal_variances
    (descending), principal_axes (unit rows), touches_boundary, and optionally
    peak_snr, position_error, intensity_error, masked_voxels and physical. The batch does the
    linear algebra for all spots in one call; per spot only the dict is
    assembled (this is on the tracker's per-job critical path).
    """
    names = axis_names(axes)
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    n = positions.shape[0]
    covariances = np.asarray(covariances, dtype=np.float64).reshape(n, 3, 3)
    intensities = np.asarray(intensities, dtype=np.float64).reshape(n)
    peaks = np.asarray(peaks, dtype=np.float64).reshape(n)
    n_vox = np.asarray(n_voxels).reshape(n).astype(np.int64)
    bboxes = np.asarray(bboxes).reshape(n, 3, 2).astype(np.int64)
    if len(shape) != 3:
        raise ValueError(f"shape needs 3 axes, got {tuple(shape)}")
    if n == 0:
        return []
    psd, evals, evecs = psd_covariance(covariances)
    variances = np.diagonal(psd, axis1=1, axis2=2)
    sigma = np.sqrt(np.where(variances > _TINY_VARIANCE, variances, 0.0))
    fwhm = FWHM_PER_SIGMA * sigma
    for label, values in (
        ("position", positions),
        ("covariance", psd),
        ("intensity", intensities),
        ("peak", peaks),
        ("principal axes", evecs),
    ):
        _check_finite(label, values)
    lo, hi = bboxes[:, :, 0], bboxes[:, :, 1]
    touches = (lo <= 0) | (hi >= np.asarray(shape, dtype=np.int64) - 1)
    snr = peaks / noise if noise is not None and noise > 0 and math.isfinite(noise) else None
    physical = None
    if origin is not None and step is not None:
        missing = [a for a in names if a not in origin or a not in step]
        if missing:
            raise ValueError(f"origin/step lack axes {missing}; need all of {list(names)}")
        o = np.array([float(origin[a]) for a in names])
        st = np.array([float(step[a]) for a in names])
        physical = (o + st * positions, np.abs(st) * sigma, np.abs(st) * fwhm)
        for label, values in zip(("origin", "step"), (o, st), strict=True):
            _check_finite(label, values)

    # tolist() once per array: far cheaper than float() per element.
    pos_l, sig_l, fwhm_l = positions.tolist(), sigma.tolist(), fwhm.tolist()
    lo_l, hi_l, touch_l = lo.tolist(), hi.tolist(), touches.tolist()
    cov_l, eval_l, evec_l = psd.tolist(), evals.tolist(), evecs.tolist()
    inten_l, peak_l, nvox_l = intensities.tolist(), peaks.tolist(), n_vox.tolist()
    snr_l = snr.tolist() if snr is not None else None
    phys_l = [p.tolist() for p in physical] if physical is not None else None
    perr_l = ierr_l = None
    if position_errors is not None:
        perr = np.asarray(position_errors, dtype=np.float64).reshape(n, 3)
        _check_finite("position error", perr)
        perr_l = perr.tolist()
    if intensity_errors is not None:
        ierr = np.asarray(intensity_errors, dtype=np.float64).reshape(n)
        _check_finite("intensity error", ierr)
        ierr_l = ierr.tolist()
    masked_l = (
        None if masked_voxels is None else np.asarray(masked_voxels).reshape(n).astype(int).tolist()
    )
    a0, a1, a2 = names
    spots = []
    for i in range(n):
        p, s, f, lw, hg, t = pos_l[i], sig_l[i], fwhm_l[i], lo_l[i], hi_l[i], touch_l[i]
        features: dict[str, Any] = {
            "position": {a0: p[0], a1: p[1], a2: p[2]},
            "intensity": inten_l[i],
            "peak": peak_l[i],
            "n_voxels": nvox_l[i],
            "bbox": {a0: [lw[0], hg[0]], a1: [lw[1], hg[1]], a2: [lw[2], hg[2]]},
            "bbox_size": {a0: hg[0] - lw[0] + 1, a1: hg[1] - lw[1] + 1, a2: hg[2] - lw[2] + 1},
            "bbox_centre": {
                a0: (lw[0] + hg[0]) / 2,
                a1: (lw[1] + hg[1]) / 2,
                a2: (lw[2] + hg[2]) / 2,
            },
            "sigma": {a0: s[0], a1: s[1], a2: s[2]},
            "fwhm": {a0: f[0], a1: f[1], a2: f[2]},
            "covariance": cov_l[i],
            "principal_variances": eval_l[i],
            "principal_axes": evec_l[i],
            "touches_boundary": {a0: t[0], a1: t[1], a2: t[2]},
        }
        if snr_l is not None:
            features["peak_snr"] = snr_l[i]
        if perr_l is not None:
            pe = perr_l[i]
            features["position_error"] = {a0: pe[0], a1: pe[1], a2: pe[2]}
        if ierr_l is not None:
            features["intensity_error"] = ierr_l[i]
        if masked_l is not None:
            features["masked_voxels"] = masked_l[i]
        if phys_l is not None:
            pp, ps, pf = phys_l[0][i], phys_l[1][i], phys_l[2][i]
            features["physical"] = {
                "position": {a0: pp[0], a1: pp[1], a2: pp[2]},
                "sigma": {a0: ps[0], a1: ps[1], a2: ps[2]},
                "fwhm": {a0: pf[0], a1: pf[1], a2: pf[2]},
            }
        spots.append(
            Spot(
                position=positions[i].copy(),
                intensity=inten_l[i],
                covariance=psd[i].copy(),
                peak=peak_l[i],
                n_voxels=nvox_l[i],
                features=features,
                position_error=None if perr_l is None else perr[i].copy(),
                intensity_error=None if ierr_l is None else ierr_l[i],
            )
        )
    return spots


def spot_features(
    *,
    position: np.ndarray,
    covariance: np.ndarray,
    intensity: float,
    peak: float,
    n_voxels: int,
    bbox: Sequence[Sequence[int]],
    shape: Sequence[int],
    axes: Sequence[str] = ("eta", "tth"),
    noise: float | None = None,
    origin: Mapping[str, float] | None = None,
    step: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The JSON-ready feature dict of one spot (see `build_spots` for the keys)."""
    return build_spots(
        positions=np.asarray(position)[None],
        covariances=np.asarray(covariance)[None],
        intensities=np.array([intensity]),
        peaks=np.array([peak]),
        n_voxels=np.array([n_voxels]),
        bboxes=np.asarray(bbox)[None],
        shape=shape,
        axes=axes,
        noise=noise,
        origin=origin,
        step=step,
    )[0].features


def spot_from_voxels(
    values: np.ndarray,
    coords: np.ndarray,
    shape: Sequence[int],
    axes: Sequence[str] = ("eta", "tth"),
    *,
    n_voxels: int | None = None,
    bbox: Sequence[Sequence[int]] | None = None,
    noise: float | None = None,
    origin: Mapping[str, float] | None = None,
    step: Mapping[str, float] | None = None,
) -> Spot:
    """A `Spot` from one spot's voxels (background-subtracted values, (n, 3) coords).

    The reference path, one spot at a time; detection uses the vectorised
    `label_moments` and agrees with this. With a noise sigma, the features
    include position_error and intensity_error. n_voxels and bbox default to the
    given voxels (pass the detection mask's when the voxels include an
    integration margin).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    coords = np.asarray(coords)
    total, mean, cov = voxel_moments(values, coords)
    perr = ierr = None
    if noise is not None and noise > 0:
        spread = np.sum((coords.astype(np.float64) - mean) ** 2, axis=0)
        perr = centre_errors(spread[None], np.array([total]), noise)
        ierr = np.array([noise * np.sqrt(values.size)])
    if bbox is None:
        c = coords.astype(np.int64)
        bbox = [(int(c[:, k].min()), int(c[:, k].max())) for k in range(3)]
    return build_spots(
        positions=mean[None],
        covariances=cov[None],
        intensities=np.array([total]),
        peaks=np.array([values.max()]),
        n_voxels=np.array([values.size if n_voxels is None else n_voxels]),
        bboxes=np.asarray(bbox)[None],
        shape=shape,
        axes=axes,
        noise=noise,
        origin=origin,
        step=step,
        position_errors=perr,
        intensity_errors=ierr,
    )[0]
