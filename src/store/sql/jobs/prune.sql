-- Deletes up to $3 finished jobs (their attempts by cascade): succeeded ones
-- older than $1 seconds, failed and cancelled ones older than $2.
WITH doomed AS (
    SELECT id FROM genq.jobs
     WHERE finished_at IS NOT NULL
       AND ((state = 'succeeded' AND finished_at < now() - make_interval(secs => $1))
         OR (state IN ('failed', 'cancelled') AND finished_at < now() - make_interval(secs => $2)))
     ORDER BY finished_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED)
 DELETE FROM genq.jobs j USING doomed d WHERE j.id = d.id
 RETURNING j.id
