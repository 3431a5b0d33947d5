-- mpitrack schema, version 1. The source of truth for the database.
-- Applied idempotently by `mpitrack db init` (and by `mpitrack run` when tables
-- are missing): every statement is IF NOT EXISTS, so applying it twice is a no-op.
-- Later changes go in sql/migrations/NNN_name.sql and bump schema_version.

CREATE TABLE IF NOT EXISTS schema_version (
    version     integer PRIMARY KEY,
    applied_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS regions (
    region_id   integer PRIMARY KEY,
    description text NOT NULL DEFAULT ''
);

CREATE TABLE IF NOT EXISTS tracks (
    region_id           integer NOT NULL REFERENCES regions (region_id),
    track_id            integer NOT NULL,
    first_detected_scan integer,
    last_detected_scan  integer,
    PRIMARY KEY (region_id, track_id)
);

CREATE TABLE IF NOT EXISTS measurements (
    id          bigserial PRIMARY KEY,
    region_id   integer NOT NULL,
    track_id    integer NOT NULL,
    scan_number integer NOT NULL,
    detected    boolean NOT NULL,
    overlapping boolean NOT NULL DEFAULT false,
    features    jsonb   NOT NULL DEFAULT '{}'::jsonb,
    -- One row per track and scan. Ordered (region, scan, track) because the
    -- hot lookups are "this region's rows in these scans" (a job's window).
    UNIQUE (region_id, scan_number, track_id),
    FOREIGN KEY (region_id, track_id) REFERENCES tracks (region_id, track_id)
);

CREATE INDEX IF NOT EXISTS measurements_scan_idx ON measurements (scan_number);
CREATE INDEX IF NOT EXISTS measurements_region_track_idx ON measurements (region_id, track_id);
-- A track's detections in scan order: first/last detected scan, trajectories.
CREATE INDEX IF NOT EXISTS measurements_detected_idx
    ON measurements (region_id, track_id, scan_number) WHERE detected;
-- Per-scan statistics of clean (non-overlapping) spots.
CREATE INDEX IF NOT EXISTS measurements_detected_alone_idx
    ON measurements (scan_number) WHERE detected AND NOT overlapping;

-- The region's tracker state after its last committed scan. Written in the same
-- transaction as that scan's measurements, so results and state never disagree.
CREATE TABLE IF NOT EXISTS tracker_checkpoints (
    region_id      integer PRIMARY KEY REFERENCES regions (region_id),
    scan_number    integer NOT NULL,
    format_version integer NOT NULL,
    state          bytea   NOT NULL,
    committed_at   timestamptz NOT NULL DEFAULT now()
);

-- Jobs that failed (bad frame, tracker error), kept so that nothing fails silently.
CREATE TABLE IF NOT EXISTS job_failures (
    region_id   integer NOT NULL,
    scan_number integer NOT NULL,
    attempt     integer NOT NULL DEFAULT 1,
    file        text,
    error       text NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (region_id, scan_number, attempt)
);

-- Per-scan statistics, written by the statistics role as each scan completes
-- for every region. Counts are of measurement rows (one per live track).
CREATE TABLE IF NOT EXISTS scan_stats (
    scan_number    integer PRIMARY KEY,
    regions        integer NOT NULL,
    live_tracks    integer NOT NULL,
    detected       integer NOT NULL,
    missed         integer NOT NULL,
    overlapping    integer NOT NULL,
    births         integer NOT NULL,
    deaths         integer NOT NULL,
    computed_at    timestamptz NOT NULL DEFAULT now()
);

INSERT INTO schema_version (version) VALUES (1) ON CONFLICT DO NOTHING;
