-- A bulk action on the jobs matching the filter of list.sql ($2 state, $3
-- created since, $4 created before, $5 queue, $6 model, $7 prompt text):
-- $1 'cancel' takes the queued ones, 'retry' the failed and cancelled ones
-- (not an edit whose input job failed: it waits for that job's retry).
-- With $8 false it only counts them.
WITH matching AS (
    SELECT j.id FROM genq.jobs j
     WHERE ($2::text IS NULL OR j.state = $2)
       AND ($3::timestamptz IS NULL OR j.created_at >= $3)
       AND ($4::timestamptz IS NULL OR j.created_at < $4)
       AND ($5::text IS NULL OR j.queue = $5)
       AND ($6::text IS NULL OR j.model = $6)
       AND ($7::text IS NULL OR strpos(lower(j.prompt), lower($7)) > 0)
       AND CASE $1 WHEN 'cancel' THEN j.state = 'queued'
                   ELSE j.state IN ('failed', 'cancelled')
                        AND NOT EXISTS (SELECT 1 FROM genq.inputs i JOIN genq.jobs s ON s.id = i.from_job
                                         WHERE i.job_id = j.id AND s.state IN ('failed', 'cancelled')) END
), cancelled AS (
    UPDATE genq.jobs j
       SET state = 'cancelled', finished_at = now(), updated_at = now()
      FROM matching m
     WHERE $8 AND $1 = 'cancel' AND j.id = m.id AND j.state = 'queued'
    RETURNING j.id
), retried AS (
    UPDATE genq.jobs j
       SET state = 'queued', attempts = 0, run_at = now(), finished_at = NULL,
           started_at = NULL, last_error = NULL, result = NULL, updated_at = now()
      FROM matching m
     WHERE $8 AND $1 = 'retry' AND j.id = m.id AND j.state IN ('failed', 'cancelled')
    RETURNING j.id
)
SELECT (SELECT count(*) FROM matching) AS "matching!",
       (SELECT count(*) FROM cancelled) + (SELECT count(*) FROM retried) AS "changed!"
