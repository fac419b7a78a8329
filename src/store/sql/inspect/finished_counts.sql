-- Retained finished jobs per (queue, model, state): reads every such row.
SELECT queue, model, state AS "state: JobState", count(*) AS "jobs!"
  FROM genq.jobs
 WHERE state IN ('succeeded', 'failed', 'cancelled')
 GROUP BY queue, model, state
 ORDER BY queue, model, state
