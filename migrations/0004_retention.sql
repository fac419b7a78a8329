-- Retention: finished jobs are pruned by age; this keeps that scan small.
CREATE INDEX jobs_finished_idx ON genq.jobs (finished_at) WHERE finished_at IS NOT NULL;
