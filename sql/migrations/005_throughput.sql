-- Migration 005: the job commit as one server-side call (issue 14).
-- Applied once by store.apply_schema (schema_version 5). Idempotent anyway.

-- commit_job: everything one (region, scan) job commits, in the statement that
-- calls it. Before, a commit COPYed the rows into temporary staging tables,
-- ANALYZEd them and ran seven statements over several round trips (about 5 ms
-- for a 10-row job); this runs the same steps in one call, whose plans
-- PL/pgSQL caches, over arrays passed as parameters (no temporary tables to
-- truncate at commit, no ANALYZE: the arrays are a job's rows, and the plans
-- are index probes whatever their length). Returns false, writing nothing,
-- when the region's checkpoint is at or past p_scan: a re-commit is a no-op.
--
-- Rows (p_tracks[i], p_scans[i], ...) replace the region's stored rows of
-- scans p_first_open..p_scan: rows of that window the new answer lacks are
-- deleted, the rest upserted (only rows that change are written), the tracks'
-- first/last detected scans updated incrementally, tracks left without rows
-- dropped, and the checkpoint written. Callers serialise on the region's row
-- (locked first, FOR NO KEY UPDATE); a transaction committing several jobs
-- calls this in region order, so two such transactions cannot deadlock.
CREATE OR REPLACE FUNCTION commit_job(
    p_region integer,
    p_scan integer,
    p_first_open integer,
    p_tracks integer[],
    p_scans integer[],
    p_detected boolean[],
    p_overlapping boolean[],
    p_features text[],
    p_format integer,
    p_state bytea
) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_done integer;
    v_gone integer[];
BEGIN
    PERFORM 1 FROM regions WHERE region_id = p_region FOR NO KEY UPDATE;
    -- Read after the lock: a job committed meanwhile is seen (READ COMMITTED).
    SELECT scan_number INTO v_done FROM tracker_checkpoints WHERE region_id = p_region;
    IF v_done >= p_scan THEN
        RETURN false;
    END IF;

    INSERT INTO tracks (region_id, track_id)
    SELECT DISTINCT p_region, t FROM unnest(p_tracks) AS t
    ON CONFLICT DO NOTHING;

    -- Rows of the open window that the new answer no longer has.
    WITH gone AS (
        DELETE FROM measurements m
        WHERE m.region_id = p_region
          AND m.scan_number BETWEEN p_first_open AND p_scan
          AND NOT EXISTS (
              SELECT 1 FROM unnest(p_tracks, p_scans) AS s (track_id, scan_number)
              WHERE s.track_id = m.track_id AND s.scan_number = m.scan_number)
        RETURNING m.track_id
    )
    SELECT array_agg(DISTINCT track_id) INTO v_gone FROM gone;

    INSERT INTO measurements (region_id, track_id, scan_number, detected, overlapping, features)
    SELECT p_region, s.track_id, s.scan_number, s.detected, s.overlapping, s.features::jsonb
    FROM unnest(p_tracks, p_scans, p_detected, p_overlapping, p_features)
         AS s (track_id, scan_number, detected, overlapping, features)
    ON CONFLICT (region_id, scan_number, track_id) DO UPDATE
    SET detected = excluded.detected, overlapping = excluded.overlapping,
        features = excluded.features
    WHERE (measurements.detected, measurements.overlapping, measurements.features)
          IS DISTINCT FROM (excluded.detected, excluded.overlapping, excluded.features);

    -- First/last detected scans, incrementally. The window ends at the job's
    -- scan, the region's newest, and rows before it are final, so: the first
    -- detection stays if it precedes the window, else it is the window's
    -- first; the last is the window's last, else the stored one if it precedes
    -- the window, else (rare: the window lost its detections) an index probe.
    WITH spans AS (
        SELECT s.track_id,
               min(s.scan_number) FILTER (WHERE s.detected) AS first_in_window,
               max(s.scan_number) FILTER (WHERE s.detected) AS last_in_window
        FROM unnest(p_tracks, p_scans, p_detected) AS s (track_id, scan_number, detected)
        GROUP BY s.track_id
        UNION ALL
        SELECT g.track_id, NULL::integer, NULL::integer
        FROM unnest(v_gone) AS g (track_id)
        WHERE g.track_id <> ALL (p_tracks)
    ),
    spans_now AS (
        SELECT t.track_id,
               t.first_detected_scan AS old_first, t.last_detected_scan AS old_last,
               CASE WHEN t.first_detected_scan < p_first_open THEN t.first_detected_scan
                    ELSE s.first_in_window END AS new_first,
               CASE WHEN s.last_in_window IS NOT NULL THEN s.last_in_window
                    WHEN t.last_detected_scan < p_first_open THEN t.last_detected_scan
                    ELSE (SELECT max(m.scan_number) FROM measurements m
                          WHERE m.region_id = p_region AND m.track_id = t.track_id
                            AND m.detected AND m.scan_number < p_first_open)
               END AS new_last
        FROM tracks t JOIN spans s ON t.region_id = p_region AND t.track_id = s.track_id
    )
    UPDATE tracks t
    SET first_detected_scan = n.new_first, last_detected_scan = n.new_last
    FROM spans_now n
    WHERE t.region_id = p_region AND t.track_id = n.track_id
      AND (n.old_first, n.old_last) IS DISTINCT FROM (n.new_first, n.new_last);

    IF v_gone IS NOT NULL THEN
        DELETE FROM tracks t
        WHERE t.region_id = p_region AND t.track_id = ANY (v_gone)
          AND NOT EXISTS (SELECT 1 FROM measurements m
                          WHERE m.region_id = p_region AND m.track_id = t.track_id);
    END IF;

    INSERT INTO tracker_checkpoints (region_id, scan_number, format_version, state)
    VALUES (p_region, p_scan, p_format, p_state)
    ON CONFLICT (region_id) DO UPDATE
    SET scan_number = excluded.scan_number, format_version = excluded.format_version,
        state = excluded.state, committed_at = now();
    RETURN true;
END
$$;

-- Typed copies of the features the statistics read for every clean spot
-- (query.scan_rows_sql, query.scan_range_rows_sql), computed by PostgreSQL as
-- rows are written; the JSONB stays the row's full record. Reading these
-- instead of extracting from the ~1.3 kB features document took the ranged
-- statistics query from 0.17 s to 0.13 s for 50,000 rows (docs/throughput.md).
-- fwhm stays a (small) document: its keys are the configured axis names. A
-- value that is not a JSON number is NULL, as a missing one is.
ALTER TABLE measurements
    ADD COLUMN IF NOT EXISTS fwhm jsonb GENERATED ALWAYS AS (features -> 'fwhm') STORED,
    ADD COLUMN IF NOT EXISTS intensity double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(features -> 'intensity') = 'number'
             THEN (features ->> 'intensity')::double precision END) STORED,
    ADD COLUMN IF NOT EXISTS max_variance double precision GENERATED ALWAYS AS (
        CASE WHEN jsonb_typeof(features -> 'principal_variances' -> 0) = 'number'
             THEN (features -> 'principal_variances' ->> 0)::double precision END) STORED;
