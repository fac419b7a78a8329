-- Completion webhooks: a durable outbox. When a job reaches a final state, a
-- delivery row is written by the same transaction (a trigger, so every way a
-- job ends counts: a worker, a cancel, a failed input job, an expiry), to the
-- job's callback_url or else its queue's default URL. Workers deliver them,
-- signed, at least once, with backoff, and give up after a configured time.

ALTER TABLE genq.jobs
    ADD COLUMN callback_url text,
    ADD CONSTRAINT jobs_callback_url_valid
        CHECK (callback_url IS NULL OR (callback_url ~* '^https?://' AND length(callback_url) <= 4096));

-- Default webhook URLs: per queue, or '*' for every queue. Workers write it
-- from GENQ_WEBHOOK_URL when they start.
CREATE TABLE genq.webhook_defaults (
    queue text PRIMARY KEY,
    url   text NOT NULL,
    CONSTRAINT webhook_defaults_url_valid CHECK (url ~* '^https?://' AND length(url) <= 4096)
);

CREATE TABLE genq.webhook_deliveries (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The Standard Webhooks message id: the same on every retry, so a
    -- receiver can drop duplicates.
    event_id      uuid        NOT NULL DEFAULT gen_random_uuid() UNIQUE,
    job_id        uuid        NOT NULL REFERENCES genq.jobs (id) ON DELETE CASCADE,
    job_state     text        NOT NULL,
    url           text        NOT NULL,
    state         text        NOT NULL DEFAULT 'pending',
    attempts      int         NOT NULL DEFAULT 0,
    next_at       timestamptz NOT NULL DEFAULT now(),
    created_at    timestamptz NOT NULL DEFAULT now(),
    delivered_at  timestamptz,
    last_status   int,
    last_error    text,
    CONSTRAINT webhook_deliveries_state_valid CHECK (state IN ('pending', 'delivered', 'failed'))
);
COMMENT ON TABLE genq.webhook_deliveries IS 'One row per completion webhook: pending until a 2xx answer, failed once given up; attempts and the last answer.';
CREATE INDEX webhook_deliveries_due_idx ON genq.webhook_deliveries (next_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_job_idx ON genq.webhook_deliveries (job_id);

CREATE FUNCTION genq.enqueue_webhook() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    target text;
BEGIN
    target := coalesce(NEW.callback_url,
                       (SELECT url FROM genq.webhook_defaults WHERE queue = NEW.queue),
                       (SELECT url FROM genq.webhook_defaults WHERE queue = '*'));
    IF target IS NOT NULL THEN
        INSERT INTO genq.webhook_deliveries (job_id, job_state, url)
        VALUES (NEW.id, NEW.state, target);
        PERFORM pg_notify('genq_webhooks', '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_webhook_done
    AFTER UPDATE OF state ON genq.jobs
    FOR EACH ROW WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled')
                       AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION genq.enqueue_webhook();

CREATE TRIGGER jobs_webhook_done_insert
    AFTER INSERT ON genq.jobs
    FOR EACH ROW WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION genq.enqueue_webhook();

-- Deliveries, for operators: one query shows what was sent where and how it went.
CREATE VIEW genq.webhooks AS
SELECT d.id, d.event_id, d.job_id, j.queue, j.model, d.job_state, d.url, d.state, d.attempts,
       d.last_status, d.last_error, d.created_at, d.next_at, d.delivered_at
  FROM genq.webhook_deliveries d
  JOIN genq.jobs j ON j.id = d.job_id;
