-- The raw loop genq is measured against: claim :batch jobs with
-- FOR UPDATE SKIP LOCKED, then mark them succeeded and record one attempt
-- row each. Same schema and indexes as genq, no worker in between.
WITH picked AS (
    SELECT id FROM genq.jobs
     WHERE state = 'queued' AND queue = 'default' AND run_at <= now()
     ORDER BY priority DESC, run_at
     LIMIT :batch
     FOR UPDATE SKIP LOCKED),
claimed AS (
    UPDATE genq.jobs j
       SET state = 'running', attempts = j.attempts + 1, locked_by = 'raw',
           lease_expires_at = now() + interval '60 s', started_at = now(), updated_at = now()
      FROM picked WHERE j.id = picked.id
    RETURNING j.id)
SELECT array_agg(id) AS ids FROM claimed \gset
WITH done AS (
    UPDATE genq.jobs
       SET state = 'succeeded', result = '{"provider":"raw"}', finished_at = now(),
           locked_by = NULL, lease_expires_at = NULL, updated_at = now()
     WHERE id = ANY(:ids::uuid[]) AND state = 'running' AND locked_by = 'raw'
    RETURNING id, attempts, started_at)
INSERT INTO genq.attempts (job_id, attempt, worker, started_at, outcome)
SELECT id, attempts, 'raw', started_at, 'succeeded' FROM done;
