-- Key operations: disabled keys are re-tested now and then, a 403 for one
-- model blocks the key for that model only, and one view says why the jobs
-- of a model wait.

ALTER TABLE genq.api_keys
    ADD COLUMN disabled_at timestamptz,
    -- When a worker last sent a disabled key's one re-test request.
    ADD COLUMN retested_at timestamptz,
    -- The provider's organization/project for a key with no configured
    -- account, from its answers' openai-organization / openai-project
    -- headers: keys of one project share its budget.
    ADD COLUMN discovered_account text;
COMMENT ON COLUMN genq.api_keys.discovered_account IS
    'organization/project the provider named in its answers; used when account is not configured.';

CREATE TRIGGER api_keys_notify_account AFTER UPDATE OF discovered_account ON genq.api_keys
    FOR EACH ROW WHEN (NEW.discovered_account IS DISTINCT FROM OLD.discovered_account)
    EXECUTE FUNCTION genq.notify_keys();
UPDATE genq.api_keys SET disabled_at = updated_at WHERE state = 'disabled';

-- A key the provider refused for one model (e.g. an organization not
-- verified for it) stays in use for the others.
CREATE TABLE genq.key_model_blocks (
    key_id     text        NOT NULL REFERENCES genq.api_keys (id) ON DELETE CASCADE,
    model      text        NOT NULL,
    reason     text        NOT NULL,
    blocked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key_id, model)
);
COMMENT ON TABLE genq.key_model_blocks IS 'Keys refused for one model (HTTP 403 naming it); cleared by genq keys enable/reset.';

CREATE FUNCTION genq.notify_key_blocks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('genq_keys', OLD.key_id);
    RETURN NULL;
END $$;

CREATE TRIGGER key_model_blocks_notify_delete AFTER DELETE ON genq.key_model_blocks
    FOR EACH ROW EXECUTE FUNCTION genq.notify_key_blocks();

-- Why jobs of a model wait, from the keys known to serve it (those whose
-- account or own id has a bucket for the model): NULL when some key can
-- serve it now or soon by its rate alone.
CREATE VIEW genq.model_waits AS
WITH serving AS (
    SELECT b.model, k.id AS key_id, k.state,
           m.reason IS NOT NULL AS blocked,
           CASE WHEN m.reason IS NOT NULL THEN 'forbidden for this model (403)'
                WHEN k.disabled_reason ILIKE '%quota%' THEN 'quota'
                WHEN k.disabled_reason LIKE 'HTTP 401%' THEN 'invalid key (401)'
                WHEN k.disabled_reason LIKE 'HTTP 403%' THEN 'forbidden (403)'
                ELSE coalesce(left(k.disabled_reason, 80), 'disabled') END AS why_disabled,
           greatest(k.cooldown_until, b.cooldown_until) AS cooling_until
      FROM genq.key_buckets b
      JOIN genq.api_keys k ON coalesce(k.account, k.discovered_account, k.id) = b.scope
      LEFT JOIN genq.key_model_blocks m ON m.key_id = k.id AND m.model = b.model
)
SELECT model,
       CASE WHEN bool_and(state = 'disabled' OR blocked)
            THEN format('waiting: every key serving %s is disabled (%s); see genq keys list', model,
                        string_agg(DISTINCT why_disabled, ', '))
            WHEN bool_and(state = 'disabled' OR blocked OR cooling_until > now())
            THEN format('waiting: every key serving %s is cooling down; the next is free in %ss', model,
                        ceil(extract(epoch FROM min(cooling_until) FILTER (WHERE NOT blocked AND state <> 'disabled') - now())))
       END AS reason,
       CASE WHEN bool_and(state = 'disabled' OR blocked) THEN 'disabled'
            WHEN bool_and(state = 'disabled' OR blocked OR cooling_until > now()) THEN 'cooling'
       END AS kind
  FROM serving
 GROUP BY model;
COMMENT ON VIEW genq.model_waits IS 'Per model: why its queued jobs wait (every key disabled or cooling), else NULL.';

-- queue_stats gains the reason queued jobs of each model wait, if any.
CREATE OR REPLACE VIEW genq.queue_stats AS
SELECT s.queue,
       s.model,
       s.state,
       count(*) AS jobs,
       min(s.run_at) FILTER (WHERE s.state = 'queued' AND s.run_at <= now()) AS oldest_queued_at,
       extract(epoch FROM now() - min(s.run_at) FILTER (WHERE s.state = 'queued' AND s.run_at <= now()))::float8
           AS oldest_queued_age_s,
       CASE WHEN s.state = 'queued' THEN min(w.reason) END AS waiting
  FROM genq.jobs s
  LEFT JOIN genq.model_waits w ON w.model = s.model
 GROUP BY s.queue, s.model, s.state;
