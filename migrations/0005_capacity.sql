-- Capacity before claim: workers claim jobs of one model at a time, only as
-- many as a key can serve now, so a waiting job is never written and keeps
-- its place. Its place is (priority DESC, run_at, seq): seq is the enqueue
-- order, which now() cannot give (one INSERT of many rows shares a now()).
ALTER TABLE genq.jobs ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;

DROP INDEX genq.jobs_claim_idx;
-- Claims of any model (providers without rate limits) and the loose scan for
-- which models have queued jobs.
CREATE INDEX jobs_claim_idx ON genq.jobs (queue, priority DESC, run_at, seq) WHERE state = 'queued';
-- Claims of one model, in line order.
CREATE INDEX jobs_claim_model_idx ON genq.jobs (queue, model, priority DESC, run_at, seq)
    WHERE state = 'queued';
-- Jobs that may run on another model when theirs must wait (params.fallback_models).
CREATE INDEX jobs_claim_fallback_idx ON genq.jobs (queue, model, priority DESC, run_at, seq)
    WHERE state = 'queued' AND params ? 'fallback_models';
-- Queued jobs with a deadline, for the sweep that fails them once it passes.
CREATE INDEX jobs_expires_idx ON genq.jobs (expires_at) WHERE state = 'queued' AND expires_at IS NOT NULL;

-- Wake workers when a key may serve again sooner than they planned: a key
-- added, enabled or reset, a cooldown lifted, a limit raised. Workers that
-- sleep until a key's known availability listen for this instead of polling.
CREATE FUNCTION genq.notify_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('genq_keys', coalesce(NEW.id, OLD.id));
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_notify_insert AFTER INSERT ON genq.api_keys
    FOR EACH ROW EXECUTE FUNCTION genq.notify_keys();

CREATE TRIGGER api_keys_notify_usable AFTER UPDATE ON genq.api_keys
    FOR EACH ROW WHEN ((OLD.state = 'disabled' AND NEW.state <> 'disabled')
                       OR (NEW.cooldown_until IS NULL AND OLD.cooldown_until IS NOT NULL)
                       OR NEW.cooldown_until < OLD.cooldown_until)
    EXECUTE FUNCTION genq.notify_keys();

CREATE TRIGGER key_buckets_notify_delete AFTER DELETE ON genq.key_buckets
    FOR EACH ROW EXECUTE FUNCTION genq.notify_keys();

CREATE TRIGGER key_buckets_notify_sooner AFTER UPDATE ON genq.key_buckets
    FOR EACH ROW WHEN (NEW.requests_per_minute > OLD.requests_per_minute
                       OR NEW.burst > OLD.burst
                       OR NEW.tat_requests < OLD.tat_requests
                       OR (NEW.cooldown_until IS NULL AND OLD.cooldown_until IS NOT NULL))
    EXECUTE FUNCTION genq.notify_keys();
