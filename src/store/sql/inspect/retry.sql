-- Puts job $1 back in the queue, with fresh attempts, if it failed or was cancelled.
UPDATE genq.jobs
   SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
       started_at = NULL, last_error = NULL, result = NULL, updated_at = now()
 WHERE id = $1 AND state IN ('failed', 'cancelled')
RETURNING id, queue, model, prompt, params, priority, state AS "state: JobState", operation AS "operation: Operation",
       awaiting_input, callback_url, run_at, attempts,
          max_attempts, idempotency_key, result, last_error, locked_by, lease_expires_at,
          expires_at, created_at, updated_at, started_at, finished_at, seq
