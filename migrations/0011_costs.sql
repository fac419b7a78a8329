-- What the provider billed, and caps on it.
--
-- Every attempt whose request the provider answered with images records its
-- cost: from the `usage` it returned when there was one (tokens priced by the
-- price table), else the table's price per image. A job carries the sum of
-- its attempts' costs, so a billed attempt that then failed (images that could
-- not be stored) still counts.
ALTER TABLE genq.attempts
    ADD COLUMN cost_usd numeric(20, 9),
    ADD COLUMN cost_source text,
    ADD COLUMN input_tokens int,
    ADD COLUMN output_tokens int,
    ADD CONSTRAINT attempts_cost_source_valid CHECK (cost_source IN ('usage', 'table', 'unpriced'));
COMMENT ON COLUMN genq.attempts.cost_usd IS
    'USD the provider billed for this request; NULL when it billed nothing or its model has no price (cost_source = unpriced).';
COMMENT ON COLUMN genq.attempts.cost_source IS
    'usage: the provider''s token usage priced by the price table; table: the table''s price per image; unpriced: billed, but no price is known.';

ALTER TABLE genq.jobs ADD COLUMN cost_usd numeric(20, 9) NOT NULL DEFAULT 0;
COMMENT ON COLUMN genq.jobs.cost_usd IS 'Sum of the cost of every billed attempt of this job, in USD.';

-- Spend per UTC day, queue, model and key: one row each, added to in the
-- statement that records the attempts. Kept when jobs are pruned, so totals,
-- the cost counter and budgets outlive retention.
CREATE TABLE genq.spend (
    day        date           NOT NULL,
    queue      text           NOT NULL,
    model      text           NOT NULL,
    key_id     text           NOT NULL,
    requests   bigint         NOT NULL DEFAULT 0,
    unpriced   bigint         NOT NULL DEFAULT 0,
    cost_usd   numeric(20, 9) NOT NULL DEFAULT 0,
    PRIMARY KEY (day, queue, model, key_id)
);
COMMENT ON TABLE genq.spend IS
    'Billed requests and their cost per UTC day, queue, model and key (unpriced: billed requests with no known price).';

CREATE VIEW genq.costs AS
SELECT queue, model, key_id,
       sum(requests)::bigint AS requests,
       sum(unpriced)::bigint AS unpriced_requests,
       sum(cost_usd) AS cost_usd,
       min(day) AS since
  FROM genq.spend
 GROUP BY queue, model, key_id;
COMMENT ON VIEW genq.costs IS
    'Total cost per (queue, model, key); GROUP BY queue, model or key_id for the totals of each.';

-- Spend caps. A queue at its cap is not claimed (its jobs wait, nothing
-- fails); an account (or a key without one) at its cap is not used.
CREATE TABLE genq.budgets (
    scope      text           NOT NULL CHECK (scope IN ('queue', 'account')),
    name       text           NOT NULL CHECK (name <> ''),
    period     text           NOT NULL CHECK (period IN ('day', 'month')),
    cap_usd    numeric(20, 9) NOT NULL CHECK (cap_usd >= 0),
    updated_at timestamptz    NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, name, period)
);
COMMENT ON TABLE genq.budgets IS
    'Spend caps per queue or per account (a key without an account is its own), per UTC day or calendar month.';

-- A changed cap wakes the workers, as a changed key does.
CREATE FUNCTION genq.notify_budgets() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('genq_keys', 'budgets');
    RETURN NULL;
END $$;
CREATE TRIGGER budgets_notify AFTER INSERT OR UPDATE OR DELETE ON genq.budgets
    FOR EACH STATEMENT EXECUTE FUNCTION genq.notify_budgets();

-- Each budget's window, what was spent in it, and whether it is used up.
-- A queue's running jobs count at the window's average cost per request, so
-- a cap is not overrun by the jobs already out.
CREATE VIEW genq.budget_status AS
WITH w AS (
    SELECT b.*,
           date_trunc(b.period, now() AT TIME ZONE 'UTC') AS starts,
           date_trunc(b.period, now() AT TIME ZONE 'UTC')
               + CASE b.period WHEN 'day' THEN interval '1 day' ELSE interval '1 month' END AS ends
      FROM genq.budgets b
), spent AS (
    SELECT w.scope, w.name, w.period,
           coalesce(sum(s.cost_usd), 0) AS spent_usd,
           coalesce(sum(s.requests), 0) AS requests
      FROM w
      LEFT JOIN genq.spend s
        ON s.day >= w.starts::date
       AND ((w.scope = 'queue' AND s.queue = w.name)
         OR (w.scope = 'account' AND s.key_id IN (
                SELECT k.id FROM genq.api_keys k
                 WHERE coalesce(k.account, k.discovered_account, k.id) = w.name)))
     GROUP BY w.scope, w.name, w.period
), running AS (
    SELECT queue, count(*) AS jobs FROM genq.jobs WHERE state = 'running' GROUP BY queue
)
SELECT w.scope, w.name, w.period, w.cap_usd, s.spent_usd,
       CASE WHEN w.scope = 'queue' AND s.requests > 0
            THEN coalesce(r.jobs, 0) * s.spent_usd / s.requests ELSE 0 END AS in_flight_usd,
       (w.starts AT TIME ZONE 'UTC') AS window_start,
       (w.ends AT TIME ZONE 'UTC') AS resets_at,
       s.spent_usd + CASE WHEN w.scope = 'queue' AND s.requests > 0
                          THEN coalesce(r.jobs, 0) * s.spent_usd / s.requests ELSE 0 END
           >= w.cap_usd AS exhausted,
       format('%s %s reached its %s budget: $%s of $%s spent; resets at %s UTC',
              w.scope, w.name, CASE w.period WHEN 'day' THEN 'daily' ELSE 'monthly' END,
              round(s.spent_usd, 4), round(w.cap_usd, 4),
              to_char(w.ends, 'YYYY-MM-DD HH24:MI')) AS reason
  FROM w
  JOIN spent s USING (scope, name, period)
  LEFT JOIN running r ON w.scope = 'queue' AND r.queue = w.name;
COMMENT ON VIEW genq.budget_status IS
    'Per budget: its window, spend (and the running jobs'' expected cost, for queues), when it resets, and whether it is used up (reason says so).';

-- queue_stats says why queued jobs wait: a used-up budget first, then the keys.
CREATE OR REPLACE VIEW genq.queue_stats AS
SELECT s.queue,
       s.model,
       s.state,
       count(*) AS jobs,
       min(s.run_at) FILTER (WHERE s.state = 'queued' AND s.run_at <= now()) AS oldest_queued_at,
       extract(epoch FROM now() - min(s.run_at) FILTER (WHERE s.state = 'queued' AND s.run_at <= now()))::float8
           AS oldest_queued_age_s,
       CASE WHEN s.state = 'queued'
            THEN coalesce(min('waiting: ' || b.reason), min(w.reason)) END AS waiting,
       sum(s.cost_usd) AS cost_usd
  FROM genq.jobs s
  LEFT JOIN genq.model_waits w ON w.model = s.model
  LEFT JOIN genq.budget_status b ON b.scope = 'queue' AND b.name = s.queue AND b.exhausted
 GROUP BY s.queue, s.model, s.state;
