-- Returns up to $1 jobs whose lease expired to the queue (or fails them if
-- their attempts are spent), recording the lost attempt.
WITH lost AS (
    SELECT id, locked_by, attempts, started_at FROM genq.jobs
     WHERE state = 'running' AND lease_expires_at < now()
     ORDER BY lease_expires_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED
), updated AS (
    UPDATE genq.jobs j
       SET state = CASE WHEN j.attempts >= j.max_attempts THEN 'failed' ELSE 'queued' END,
           finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
           last_error = format('lease expired: worker %s stopped renewing it (crashed or lost the database)', l.locked_by),
           run_at = now(), locked_by = NULL, lease_expires_at = NULL, updated_at = now()
      FROM lost l
     WHERE j.id = l.id
    RETURNING j.id
)
INSERT INTO genq.attempts (job_id, attempt, worker, started_at, outcome, error)
SELECT l.id, l.attempts, l.locked_by, coalesce(l.started_at, now()), 'lost',
       'lease expired before the worker reported an outcome'
  FROM lost l JOIN updated u ON u.id = l.id
