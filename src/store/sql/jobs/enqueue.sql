-- A producer's job, or nothing when its idempotency key exists already.
INSERT INTO genq.jobs (queue, model, prompt, params, priority, run_at, max_attempts,
                       idempotency_key, expires_at, operation, callback_url)
VALUES ($1, $2, $3, coalesce($4, '{}'::jsonb), coalesce($5, 0), coalesce($6, now()),
        coalesce($7, 5), $8, $9, $10, $11)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, state AS "state: JobState"
