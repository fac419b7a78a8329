-- The models with due jobs in queue $1 (a loose index scan: one probe per
-- model), each with what its first job in line costs, most urgent first.
WITH RECURSIVE models AS (
    (SELECT model FROM genq.jobs WHERE state = 'queued' AND NOT awaiting_input AND queue = $1 ORDER BY model LIMIT 1)
    UNION ALL
    SELECT (SELECT j.model FROM genq.jobs j
             WHERE j.state = 'queued' AND NOT j.awaiting_input AND j.queue = $1 AND j.model > m.model
             ORDER BY j.model LIMIT 1)
      FROM models m WHERE m.model IS NOT NULL
)
SELECT m.model AS "model!", h.n AS "n!" FROM models m
 CROSS JOIN LATERAL (
    SELECT j.priority, j.run_at, j.seq,
           CASE WHEN jsonb_typeof(j.params->'n') = 'number'
                THEN greatest(1, least(100, (j.params->>'n')::numeric))::int ELSE 1 END AS n
      FROM genq.jobs j
     WHERE j.state = 'queued' AND NOT j.awaiting_input AND j.queue = $1 AND j.model = m.model AND j.run_at <= now()
     ORDER BY j.priority DESC, j.run_at, j.seq
     LIMIT 1) h
 WHERE m.model IS NOT NULL
 ORDER BY h.priority DESC, h.run_at, h.seq
