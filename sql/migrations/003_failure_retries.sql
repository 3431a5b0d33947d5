-- Migration 003: failed jobs can be retried (`mpitrack run --retry-failed`).
-- Applied once by store.apply_schema (schema_version 3). Idempotent anyway.

-- When a run tracked the failure's region again from its first scan; NULL while the
-- failure stands. The row stays, so that the history of failures is kept.
ALTER TABLE job_failures ADD COLUMN IF NOT EXISTS retried_at timestamptz;
