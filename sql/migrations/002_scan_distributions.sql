-- Migration 002: per-scan distributions for the statistics role and `mpitrack report`.
-- Applied once by store.apply_schema (schema_version 2). Idempotent anyway.

-- scan_stats (version 1) holds the counts; these columns complete the per-scan summary.
--   overlap_fraction: overlapping / detected, NULL when nothing was detected.
--   compute_seconds: how long the statistics took, to watch the role's cost.
ALTER TABLE scan_stats
    ADD COLUMN IF NOT EXISTS overlap_fraction double precision,
    ADD COLUMN IF NOT EXISTS compute_seconds  double precision;

-- One row per scan and quantity (width_<axis> as FWHM in voxels, intensity,
-- max_variance, age, lifetime; see docs/statistics.md). Spot quantities are of
-- the clean spots (detected and not overlapping: an overlapped spot's moments
-- describe the merged blob, not one reflection). Percentiles are
-- linear-interpolated (percentile_cont); NULL when n = 0. Width quantities
-- also carry a histogram with the same bin edges for every scan:
-- hist_bins equal bins over [hist_lo, hist_hi], values outside clipped into
-- the first or last bin.
CREATE TABLE IF NOT EXISTS scan_distributions (
    scan_number integer NOT NULL REFERENCES scan_stats (scan_number) ON DELETE CASCADE,
    quantity    text    NOT NULL,
    n           integer NOT NULL,
    mean        double precision,
    p05         double precision,
    p25         double precision,
    p50         double precision,
    p75         double precision,
    p95         double precision,
    hist_lo     double precision,
    hist_hi     double precision,
    hist        integer[],
    PRIMARY KEY (scan_number, quantity)
);
