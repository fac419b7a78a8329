-- Deletes up to $3 finished jobs (their attempts by cascade): succeeded ones
-- older than $1 seconds, failed and cancelled ones older than $2; never a
-- job whose images an unfinished edit still needs (genq.inputs.from_job).
WITH doomed AS (
    SELECT id FROM genq.jobs
     WHERE finished_at IS NOT NULL
       AND ((state = 'succeeded' AND finished_at < now() - make_interval(secs => $1))
         OR (state IN ('failed', 'cancelled') AND finished_at < now() - make_interval(secs => $2)))
       AND NOT EXISTS (SELECT 1 FROM genq.inputs i JOIN genq.jobs d ON d.id = i.job_id
                        WHERE i.from_job = genq.jobs.id AND d.finished_at IS NULL)
     ORDER BY finished_at
     LIMIT $3
       FOR UPDATE SKIP LOCKED)
 DELETE FROM genq.jobs j USING doomed d WHERE j.id = d.id
 RETURNING j.id
