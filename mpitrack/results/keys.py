"""What a stored result means: every column and feature key, in one place.

The ``features`` JSONB of a measurement row is written by two pieces of code
(track/features.py for a detected spot, track/mht/rows.py for what the
tracker adds), and read by scientists who never saw either. This registry is
the one definition both docs/results.md (its tables are generated from here,
see `results.doc`) and the typed SQL views (`results.views`) are made from;
tests check it against the keys the code really writes, so none of the three
can drift from the others.

Units: positions, widths and boxes are region-local voxels in the order
(omega, axis1, axis2), the frame axes named by the config's ``frames.axes``
(default eta, tth). Intensities are detector counts after background
subtraction. ``physical`` repeats position, sigma and fwhm in degrees where
detection was given a geometry (a per-axis origin and step).
"""

from __future__ import annotations

from dataclasses import dataclass

# How a feature's value is shaped in the JSONB.
SCALAR = "number"
PER_AXIS = "{axis: number}"
PER_AXIS_RANGE = "{axis: [lo, hi]}"
PER_AXIS_FLAG = "{axis: bool}"
MATRIX = "3×3 list"
VECTOR = "list of 3"
FLAG = "bool"
ID_LIST = "list of track ids"
NESTED = "{position|sigma|fwhm: {axis: number}}"

# Which rows carry a key.
DETECTED_ROWS = "detected"
EVERY_ROW = "every row"


@dataclass(frozen=True)
class Column:
    """A column of the measurements table."""

    name: str
    sql_type: str
    meaning: str


@dataclass(frozen=True)
class FeatureSpec:
    """One key of a measurement's ``features`` JSONB.

    unit: of every number in the value ("" when dimensionless or not a quantity).
    rows: which rows carry it (detected rows, every row, or a narrower case).
    view_type: the SQL type of its typed column(s) in the ``measurement_values``
        view (one column per axis for per-axis keys, named ``<key>_<axis>``);
        None when the key stays in the JSONB only (matrices, lists).
    """

    key: str
    shape: str
    unit: str
    rows: str
    meaning: str
    view_type: str | None = None

    @property
    def per_axis(self) -> bool:
        return self.shape in (PER_AXIS, PER_AXIS_FLAG)


MEASUREMENT_COLUMNS: tuple[Column, ...] = (
    Column("id", "bigint", "row id (insertion order; not stable across revisions of a scan)"),
    Column("region_id", "integer", "the region (the config's regions[].id)"),
    Column("track_id", "integer", "the track, numbered per region in order of birth"),
    Column("scan_number", "integer", "the scan"),
    Column(
        "detected",
        "boolean",
        "true: a spot was measured for this track in this scan and the features are the "
        "spot's; false: the track was not seen (missed, or the scan's frames were unusable) "
        "and the row holds only the predicted position",
    ),
    Column(
        "overlapping",
        "boolean",
        "true: another track's centre lies within the resolution limit of this one in this "
        "scan (closer than tracking.overlap_distance summed widths), so detection cannot "
        "tell the two apart and widths/intensity describe the merged blob; always false "
        "for rows that are not detected",
    ),
    Column("features", "jsonb", "the measured values, keys below"),
    # Generated from features as rows are written (migration 005), for the statistics'
    # reads; the view's typed columns are the ones to query.
    Column("fwhm", "jsonb", "generated: features -> 'fwhm' (read by the statistics)"),
    Column(
        "intensity",
        "double precision",
        "generated: features' intensity as a number, NULL where absent",
    ),
    Column(
        "max_variance",
        "double precision",
        "generated: the largest of features' principal_variances, NULL where absent",
    ),
)

TRACK_COLUMNS: tuple[Column, ...] = (
    Column("region_id", "integer", "the region"),
    Column("track_id", "integer", "the track"),
    Column("first_detected_scan", "integer", "the track's first scan with detected = true"),
    Column("last_detected_scan", "integer", "the track's last scan with detected = true"),
)

FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        "position",
        PER_AXIS,
        "voxels",
        EVERY_ROW,
        "the track's centre: the measured intensity-weighted centre when detected alone, the "
        "tracker's estimate when overlapping, the prediction when missed",
        "double precision",
    ),
    FeatureSpec(
        "intensity",
        SCALAR,
        "counts",
        DETECTED_ROWS,
        "integrated intensity, background subtracted (the sum of both pieces for a fragments row)",
        "double precision",
    ),
    FeatureSpec(
        "peak",
        SCALAR,
        "counts",
        DETECTED_ROWS,
        "highest voxel value above background",
        "double precision",
    ),
    FeatureSpec(
        "n_voxels", SCALAR, "voxels", DETECTED_ROWS, "voxels in the detection mask", "integer"
    ),
    FeatureSpec(
        "bbox",
        PER_AXIS_RANGE,
        "voxels",
        DETECTED_ROWS,
        "inclusive voxel index range of the detection mask",
    ),
    FeatureSpec(
        "bbox_size", PER_AXIS, "voxels", DETECTED_ROWS, "extent of the detection mask (hi - lo + 1)"
    ),
    FeatureSpec(
        "bbox_centre", PER_AXIS, "voxels", DETECTED_ROWS, "middle of the detection mask's box"
    ),
    FeatureSpec(
        "sigma",
        PER_AXIS,
        "voxels",
        DETECTED_ROWS,
        "standard deviation of the intensity along the axis (second moment)",
        "double precision",
    ),
    FeatureSpec(
        "fwhm",
        PER_AXIS,
        "voxels",
        DETECTED_ROWS,
        "full width at half maximum along the axis, 2·sqrt(2·ln 2)·sigma (the Gaussian value)",
        "double precision",
    ),
    FeatureSpec(
        "covariance",
        MATRIX,
        "voxels²",
        DETECTED_ROWS,
        "intensity covariance in axis order (omega, axis1, axis2), projected to PSD",
    ),
    FeatureSpec(
        "principal_variances",
        VECTOR,
        "voxels²",
        DETECTED_ROWS,
        "eigenvalues of the covariance, descending",
    ),
    FeatureSpec(
        "principal_axes",
        MATRIX,
        "",
        DETECTED_ROWS,
        "unit eigenvectors (rows) of the covariance, in the order of the variances",
    ),
    FeatureSpec(
        "touches_boundary",
        PER_AXIS_FLAG,
        "",
        DETECTED_ROWS,
        "the detection mask reaches the region's edge on this axis: the centre and "
        "intensity may be cut off",
        "boolean",
    ),
    FeatureSpec(
        "peak_snr",
        SCALAR,
        "",
        "detected, when the noise is known",
        "peak / background noise sigma",
        "double precision",
    ),
    FeatureSpec(
        "position_error",
        PER_AXIS,
        "voxels",
        "detected, when the noise is known",
        "standard error of the centre from background noise (a lower bound for bright spots)",
        "double precision",
    ),
    FeatureSpec(
        "intensity_error",
        SCALAR,
        "counts",
        "detected, when the noise is known",
        "standard error of the intensity from background noise",
        "double precision",
    ),
    FeatureSpec(
        "masked_voxels",
        SCALAR,
        "voxels",
        DETECTED_ROWS,
        "voxels of the integration region without a measurement (interpolated)",
        "integer",
    ),
    FeatureSpec(
        "physical",
        NESTED,
        "degrees",
        "detected, when a geometry is known",
        "position (origin + step·voxel, no modulo 360), sigma and fwhm in degrees",
    ),
    FeatureSpec(
        "measured_position",
        PER_AXIS,
        "voxels",
        "detected, spot shared",
        "the shared spot's measured centre (position holds the track's own estimate)",
    ),
    FeatureSpec(
        "overlap_with",
        ID_LIST,
        "",
        "detected, spot shared",
        "track ids of the other tracks that share this row's spot (one detected spot "
        "explained by several tracks)",
    ),
    FeatureSpec(
        "fragments",
        SCALAR,
        "",
        "detected, split spot",
        "2: the track's spot came as two fragments, joined (intensity is their sum)",
        "integer",
    ),
    FeatureSpec(
        "predicted",
        FLAG,
        "",
        "not detected",
        "true: the row is the tracker's prediction, nothing was measured",
        "boolean",
    ),
    FeatureSpec(
        "unusable_scan",
        FLAG,
        "",
        "not detected, frames unusable",
        "true: the scan's frames for this region could not be used",
        "boolean",
    ),
)

# physical.<part> get typed columns physical_<part>_<axis> (degrees).
PHYSICAL_PARTS = ("position", "sigma", "fwhm")

FEATURE_KEYS = frozenset(f.key for f in FEATURES)


def feature(key: str) -> FeatureSpec:
    for spec in FEATURES:
        if spec.key == key:
            return spec
    raise KeyError(f"no feature {key!r}; known: {sorted(FEATURE_KEYS)}")
