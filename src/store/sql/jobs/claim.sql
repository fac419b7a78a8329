-- Up to $2 due jobs of queue $1, in line order, taken by worker $3 under a
-- lease of $4 seconds; each claim counts an attempt.
WITH picked AS (
    SELECT id FROM genq.jobs
     WHERE state = 'queued' AND NOT awaiting_input AND queue = $1 AND run_at <= now()
       AND (expires_at IS NULL OR expires_at > now())
     ORDER BY priority DESC, run_at, seq
     LIMIT $2
     FOR UPDATE SKIP LOCKED)
UPDATE genq.jobs j
   SET state = 'running', attempts = j.attempts + 1, locked_by = $3,
       lease_expires_at = now() + make_interval(secs => $4),
       started_at = now(), updated_at = now()
  FROM picked
 WHERE j.id = picked.id
RETURNING j.id, j.queue, j.model, j.prompt, j.params, j.priority, j.state AS "state: JobState", j.operation AS "operation: Operation", j.awaiting_input, j.callback_url,
          j.run_at, j.attempts, j.max_attempts, j.idempotency_key, j.result, j.last_error,
          j.locked_by, j.lease_expires_at, j.expires_at, j.created_at, j.updated_at,
          j.started_at, j.finished_at, j.seq
