-- Fails up to $1 queued jobs whose expires_at has passed.
WITH doomed AS (
    SELECT id FROM genq.jobs
     WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= now()
     ORDER BY expires_at
     LIMIT $1
       FOR UPDATE SKIP LOCKED)
UPDATE genq.jobs j
   SET state = 'failed', finished_at = now(), updated_at = now(),
       last_error = format('expired at %s while waiting for capacity%s', j.expires_at,
                           CASE WHEN j.last_error IS NULL THEN '' ELSE ': ' || j.last_error END)
  FROM doomed d
 WHERE j.id = d.id
