-- The queue: jobs, their attempts, and the trigger that wakes workers.
CREATE SCHEMA IF NOT EXISTS genq;

CREATE TABLE genq.jobs (
    id               uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    queue            text        NOT NULL DEFAULT 'default',
    model            text        NOT NULL DEFAULT 'gpt-image-2',
    prompt           text        NOT NULL,
    params           jsonb       NOT NULL DEFAULT '{}',
    priority         int         NOT NULL DEFAULT 0,
    state            text        NOT NULL DEFAULT 'queued',
    run_at           timestamptz NOT NULL DEFAULT now(),
    attempts         int         NOT NULL DEFAULT 0,
    max_attempts     int         NOT NULL DEFAULT 5,
    idempotency_key  text        UNIQUE,
    result           jsonb,
    last_error       text,
    locked_by        text,
    lease_expires_at timestamptz,
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    CONSTRAINT jobs_state_valid CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    CONSTRAINT jobs_prompt_not_empty CHECK (btrim(prompt) <> ''),
    CONSTRAINT jobs_queue_not_empty CHECK (btrim(queue) <> ''),
    CONSTRAINT jobs_model_not_empty CHECK (btrim(model) <> ''),
    CONSTRAINT jobs_params_is_object CHECK (jsonb_typeof(params) = 'object'),
    CONSTRAINT jobs_priority_range CHECK (priority BETWEEN 0 AND 1000),
    CONSTRAINT jobs_max_attempts_range CHECK (max_attempts BETWEEN 1 AND 100),
    CONSTRAINT jobs_attempts_nonnegative CHECK (attempts >= 0),
    CONSTRAINT jobs_idempotency_key_not_empty CHECK (idempotency_key IS NULL OR btrim(idempotency_key) <> ''),
    -- finished_at is set exactly in the final states.
    CONSTRAINT jobs_finished_at_iff_final
        CHECK ((state IN ('succeeded', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    -- A running job always has an owner and a lease; nothing else does.
    CONSTRAINT jobs_lease_iff_running
        CHECK ((state = 'running') = (locked_by IS NOT NULL AND lease_expires_at IS NOT NULL))
);

COMMENT ON TABLE genq.jobs IS 'Image-generation jobs. Enqueue with INSERT INTO genq.jobs (prompt) VALUES (...).';

-- The claim scan: queued jobs of one queue in (priority desc, run_at) order.
-- Partial, so it stays small however many finished jobs the table keeps.
CREATE INDEX jobs_claim_idx ON genq.jobs (queue, priority DESC, run_at) WHERE state = 'queued';
-- The reaper's scan: running jobs by lease expiry.
CREATE INDEX jobs_lease_idx ON genq.jobs (lease_expires_at) WHERE state = 'running';
-- Inspection: recent failures and listings by state.
CREATE INDEX jobs_state_created_idx ON genq.jobs (state, created_at DESC);

CREATE TABLE genq.attempts (
    id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         uuid        NOT NULL REFERENCES genq.jobs (id) ON DELETE CASCADE,
    attempt        int         NOT NULL,
    worker         text,
    key_id         text,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz NOT NULL DEFAULT now(),
    outcome        text        NOT NULL,
    http_status    int,
    error          text,
    retry_after_ms bigint,
    CONSTRAINT attempts_outcome_valid CHECK (outcome IN
        ('succeeded', 'failed', 'retry', 'rate_limited', 'key_rejected', 'lost', 'released'))
);
COMMENT ON TABLE genq.attempts IS 'One row per execution of a job: its key, HTTP status, outcome and error.';
CREATE INDEX attempts_job_idx ON genq.attempts (job_id, id);

-- Wake workers when a job becomes claimable now. Workers also poll, so a
-- missed notification only costs latency, never a job.
CREATE FUNCTION genq.notify_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('genq_jobs', NEW.queue);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_insert
    AFTER INSERT ON genq.jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND NEW.run_at <= now())
    EXECUTE FUNCTION genq.notify_jobs();

CREATE TRIGGER jobs_notify_requeue
    AFTER UPDATE OF state, run_at ON genq.jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND NEW.run_at <= now()
                       AND (OLD.state IS DISTINCT FROM 'queued' OR OLD.run_at > now()))
    EXECUTE FUNCTION genq.notify_jobs();
