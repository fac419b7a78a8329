-- Every attempt of job $1, oldest first.
SELECT id, job_id, attempt, worker, key_id, started_at, finished_at,
       outcome AS "outcome: AttemptOutcome", http_status, error, retry_after_ms
  FROM genq.attempts WHERE job_id = $1 ORDER BY id
