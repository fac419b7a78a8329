-- The fallback models named by the first due jobs of model $2 in queue $1,
-- most urgent first.
SELECT f.model AS "model!" FROM (
    SELECT params->'fallback_models' AS models FROM genq.jobs
     WHERE state = 'queued' AND NOT awaiting_input AND queue = $1 AND model = $2 AND run_at <= now()
       AND params ? 'fallback_models'
     ORDER BY priority DESC, run_at, seq
     LIMIT 16) j
 CROSS JOIN LATERAL jsonb_array_elements_text(
        CASE WHEN jsonb_typeof(j.models) = 'array' THEN j.models ELSE '[]' END)
        WITH ORDINALITY AS f(model, ord)
 GROUP BY f.model
 ORDER BY min(f.ord), f.model
