-- Jobs matching the filter, at most $3, newest first; with $4/$5, only those
-- after that (created_at, id) keyset. The filter ($1 state, $2 created
-- since, $6 created before, $7 queue, $8 model, $9 text in the prompt, any
-- case) is the one `bulk.sql` applies too.
SELECT id, queue, model, prompt, params, priority, state AS "state: JobState", operation AS "operation: Operation",
       awaiting_input, callback_url, run_at, attempts,
          max_attempts, idempotency_key, result, last_error, locked_by, lease_expires_at,
          expires_at, created_at, updated_at, started_at, finished_at, seq
  FROM genq.jobs
 WHERE ($1::text IS NULL OR state = $1)
   AND ($2::timestamptz IS NULL OR created_at >= $2)
   AND ($6::timestamptz IS NULL OR created_at < $6)
   AND ($7::text IS NULL OR queue = $7)
   AND ($8::text IS NULL OR model = $8)
   AND ($9::text IS NULL OR strpos(lower(prompt), lower($9)) > 0)
   AND ($4::timestamptz IS NULL OR (created_at, id) < ($4, $5))
 ORDER BY created_at DESC, id DESC
 LIMIT $3
