-- Writes a batch of completions of worker $1, fenced by (locked_by, attempts)
-- in the UPDATE itself, records each call in genq.attempts, adds what billed
-- calls cost to their jobs, and to genq.spend (rows taken in key order, so
-- concurrent batches never wait on each other in a cycle).
WITH input AS (
    SELECT * FROM unnest($2::uuid[], $3::int[], $4::text[], $5::bool[], $6::jsonb[],
                         $7::text[], $8::float8[], $9::text[], $10::text[],
                         $11::int[], $12::text[], $13::int8[], $14::timestamptz[],
                         $15::text[], $16::text[], $17::int8[], $18::int[], $19::int[])
        AS t(id, attempt, state, refund, result, error, delay_secs,
             call_outcome, key_id, http_status, call_error, retry_after_ms, call_started_at,
             cost_model, cost_source, cost_nanos, input_tokens, output_tokens)
), updated AS (
    UPDATE genq.jobs j
       SET state = i.state,
           attempts = CASE WHEN i.refund THEN j.attempts - 1 ELSE j.attempts END,
           result = coalesce(i.result, j.result),
           last_error = i.error,
           run_at = CASE WHEN i.delay_secs IS NULL THEN j.run_at
                         ELSE now() + make_interval(secs => i.delay_secs) END,
           finished_at = CASE WHEN i.state = 'queued' THEN NULL ELSE now() END,
           cost_usd = j.cost_usd + coalesce(i.cost_nanos, 0)::numeric / 1000000000,
           locked_by = NULL, lease_expires_at = NULL, updated_at = now()
      FROM input i
     WHERE j.id = i.id AND j.state = 'running' AND j.locked_by = $1
       AND j.attempts = i.attempt
    RETURNING j.id, j.queue
), recorded AS (
    INSERT INTO genq.attempts (job_id, attempt, worker, key_id, started_at, outcome,
                               http_status, error, retry_after_ms,
                               cost_usd, cost_source, input_tokens, output_tokens)
    SELECT i.id, i.attempt, $1, i.key_id, i.call_started_at, i.call_outcome,
           i.http_status, i.call_error, i.retry_after_ms,
           i.cost_nanos::numeric / 1000000000, i.cost_source, i.input_tokens, i.output_tokens
      FROM input i JOIN updated u ON u.id = i.id
     WHERE i.call_outcome IS NOT NULL
), spent AS (
    INSERT INTO genq.spend AS s (day, queue, model, key_id, requests, unpriced, cost_usd)
    SELECT (now() AT TIME ZONE 'UTC')::date, u.queue, i.cost_model, coalesce(i.key_id, ''),
           count(*), count(*) FILTER (WHERE i.cost_source = 'unpriced'),
           coalesce(sum(i.cost_nanos), 0)::numeric / 1000000000
      FROM input i JOIN updated u ON u.id = i.id
     WHERE i.cost_source IS NOT NULL
     GROUP BY u.queue, i.cost_model, coalesce(i.key_id, '')
     ORDER BY u.queue, i.cost_model, coalesce(i.key_id, '')
    ON CONFLICT (day, queue, model, key_id) DO UPDATE
       SET requests = s.requests + excluded.requests,
           unpriced = s.unpriced + excluded.unpriced,
           cost_usd = s.cost_usd + excluded.cost_usd
)
SELECT id AS "id!" FROM updated
