-- Migration 004: typed views of the results for scientists (docs/results.md).
-- Applied once by store.apply_schema (schema_version 4). Idempotent anyway.

-- The experiment's feature axes in order: 0 = omega, 1 and 2 = the config's
-- frames.axes. JSONB does not keep key order, so the order is recorded here;
-- `mpitrack run` and `mpitrack db init --config` write it. The views
-- (measurement_values: one typed column per feature and axis) are generated
-- from the feature registry, mpitrack/results/keys.py, by store.apply_schema
-- for these axes: their SQL is in docs/results.md.
CREATE TABLE IF NOT EXISTS result_axes (
    axis_index smallint PRIMARY KEY CHECK (axis_index BETWEEN 0 AND 2),
    name       text NOT NULL UNIQUE
);
