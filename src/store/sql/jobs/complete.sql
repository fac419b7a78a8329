-- Writes a batch of completions of worker $1, fenced by (locked_by, attempts)
-- in the UPDATE itself, and records each call in genq.attempts.
WITH input AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::bool[], $6::jsonb[],
                         $7::text[], $8::float8[], $9::text[], $10::text[],
                         $11::int[], $12::text[], $13::int8[], $14::timestamptz[])
        AS t(id, attempt, state, refund, result, error, delay_secs,
             call_outcome, key_id, http_status, call_error, retry_after_ms, call_started_at)
), updated AS (
    UPDATE genq.jobs j
       SET state = i.state,
           attempts = CASE WHEN i.refund THEN j.attempts - 1 ELSE j.attempts END,
           result = coalesce(i.result, j.result),
           last_error = i.error,
           run_at = CASE WHEN i.delay_secs IS NULL THEN j.run_at
                         ELSE now() + make_interval(secs => i.delay_secs) END,
           finished_at = CASE WHEN i.state = 'queued' THEN NULL ELSE now() END,
           locked_by = NULL, lease_expires_at = NULL, updated_at = now()
      FROM input i
     WHERE j.id = i.id AND j.state = 'running' AND j.locked_by = $1
       AND j.attempts = i.attempt
    RETURNING j.id
), recorded AS (
    INSERT INTO genq.attempts (job_id, attempt, worker, key_id, started_at, outcome,
                               http_status, error, retry_after_ms)
    SELECT i.id, i.attempt, $1, i.key_id, i.call_started_at, i.call_outcome,
           i.http_status, i.call_error, i.retry_after_ms
      FROM input i JOIN updated u ON u.id = i.id
     WHERE i.call_outcome IS NOT NULL
)
SELECT id AS "id!" FROM updated
