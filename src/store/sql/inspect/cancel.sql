-- Cancels job $1 if it is queued.
UPDATE genq.jobs
   SET state = 'cancelled', finished_at = now(), updated_at = now()
 WHERE id = $1 AND state = 'queued'
RETURNING id, queue, model, prompt, params, priority, state AS "state: JobState", operation AS "operation: Operation",
       awaiting_input, callback_url, run_at, attempts,
          max_attempts, idempotency_key, result, last_error, locked_by, lease_expires_at,
          expires_at, created_at, updated_at, started_at, finished_at, seq
