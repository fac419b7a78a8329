-- Queued and running jobs per (queue, model), each state read from its
-- partial index; why queued ones wait: a used-up queue budget, else
-- genq.model_waits.
WITH active AS (
    SELECT queue, model, 'queued'::text AS state, count(*) AS jobs,
           extract(epoch FROM now() - min(run_at) FILTER (WHERE run_at <= now()))::float8
               AS oldest_due_age_s
      FROM genq.jobs WHERE state = 'queued' GROUP BY queue, model
    UNION ALL
    SELECT queue, model, 'running', count(*), NULL
      FROM genq.jobs WHERE state = 'running' GROUP BY queue, model
), over_budget AS (
    SELECT DISTINCT name AS queue FROM genq.budget_status WHERE scope = 'queue' AND exhausted
)
SELECT a.queue AS "queue!", a.model AS "model!", a.state AS "state!: JobState",
       a.jobs AS "jobs!", a.oldest_due_age_s,
       CASE WHEN a.state = 'queued'
            THEN CASE WHEN b.queue IS NOT NULL THEN 'budget' ELSE w.kind END END AS waiting
  FROM active a
  LEFT JOIN genq.model_waits w ON w.model = a.model
  LEFT JOIN over_budget b ON b.queue = a.queue
 ORDER BY a.queue, a.model, a.state
