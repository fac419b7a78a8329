-- Every attempt of job $1, oldest first.
SELECT id, job_id, attempt, worker, key_id, started_at, finished_at,
       outcome AS "outcome: AttemptOutcome", http_status, error, retry_after_ms,
       (cost_usd * 1000000000)::int8 AS "cost_usd: Usd", cost_source AS "cost_source: CostSource",
       input_tokens, output_tokens
  FROM genq.attempts WHERE job_id = $1 ORDER BY id
