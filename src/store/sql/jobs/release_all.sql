-- Puts every job worker $1 holds back in the queue without spending an
-- attempt, recording a released attempt.
WITH released AS (
    UPDATE genq.jobs
       SET state = 'queued', attempts = attempts - 1, run_at = now(),
           locked_by = NULL, lease_expires_at = NULL, updated_at = now()
     WHERE state = 'running' AND locked_by = $1
    RETURNING id, attempts + 1 AS attempt, started_at
)
INSERT INTO genq.attempts (job_id, attempt, worker, started_at, outcome, error)
SELECT id, attempt, $1, coalesce(started_at, now()), 'released',
       'worker shut down before the job finished; returned to the queue'
  FROM released
