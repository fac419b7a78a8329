-- Inspection views: one query answers "what failed and why" and "how deep is the queue".
-- (0002 is reserved for another change; these views depend only on 0001.)

-- Failed jobs with the key and HTTP status of their last attempt.
CREATE VIEW genq.failed_jobs AS
SELECT j.id,
       j.queue,
       j.model,
       j.prompt,
       j.attempts,
       j.max_attempts,
       j.last_error,
       j.created_at,
       j.finished_at,
       a.outcome     AS last_outcome,
       a.http_status AS last_http_status,
       a.key_id      AS last_key_id
  FROM genq.jobs j
  LEFT JOIN LATERAL (
        SELECT outcome, http_status, key_id
          FROM genq.attempts
         WHERE job_id = j.id
         ORDER BY id DESC
         LIMIT 1) a ON true
 WHERE j.state = 'failed';

COMMENT ON VIEW genq.failed_jobs IS
    'Failed jobs with their last attempt''s outcome, HTTP status and key id; ORDER BY finished_at DESC for the newest.';

-- One row per (queue, model, state) that has jobs. For queued rows,
-- oldest_queued_at is the earliest run_at among jobs that are due now, and
-- oldest_queued_age_s how many seconds it has waited since (NULL when no
-- queued job is due yet, and for other states). Totals per state: SUM(jobs)
-- grouped by state.
CREATE VIEW genq.queue_stats AS
SELECT queue,
       model,
       state,
       count(*) AS jobs,
       min(run_at) FILTER (WHERE state = 'queued' AND run_at <= now()) AS oldest_queued_at,
       extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'queued' AND run_at <= now()))::float8
           AS oldest_queued_age_s
  FROM genq.jobs
 GROUP BY queue, model, state;

COMMENT ON VIEW genq.queue_stats IS
    'Jobs per (queue, model, state); for queued rows, the oldest due job''s run_at and its wait in seconds.';
