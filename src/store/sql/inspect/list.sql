-- Jobs in state $1 (any when NULL) created since $2, at most $3, newest
-- first; with $4/$5, only those after that (created_at, id) keyset.
SELECT id, queue, model, prompt, params, priority, state AS "state: JobState", operation AS "operation: Operation",
       awaiting_input, callback_url, run_at, attempts,
          max_attempts, idempotency_key, result, last_error, locked_by, lease_expires_at,
          expires_at, created_at, updated_at, started_at, finished_at, seq
  FROM genq.jobs
 WHERE ($1::text IS NULL OR state = $1)
   AND ($2::timestamptz IS NULL OR created_at >= $2)
   AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
 ORDER BY created_at DESC, id DESC
 LIMIT $3
