-- The job holding idempotency key $1.
SELECT id, queue, model, prompt, params, priority, state AS "state: JobState", operation AS "operation: Operation",
       awaiting_input, callback_url, run_at, attempts,
       max_attempts, idempotency_key, result, last_error, locked_by, lease_expires_at,
       expires_at, created_at, updated_at, started_at, finished_at, seq
  FROM genq.jobs WHERE idempotency_key = $1
