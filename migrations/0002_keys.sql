-- API keys and their rate-limit buckets. Secrets are never stored: a key is
-- known by its id (its name, or key- + 8 hex of sha256(secret)).

CREATE TABLE genq.api_keys (
    id                   text        PRIMARY KEY,
    account              text,
    state                text        NOT NULL DEFAULT 'active',
    cooldown_until       timestamptz,
    disabled_reason      text,
    ok_count             bigint      NOT NULL DEFAULT 0,
    rate_limited_count   bigint      NOT NULL DEFAULT 0,
    error_count          bigint      NOT NULL DEFAULT 0,
    consecutive_429      int         NOT NULL DEFAULT 0,
    consecutive_failures int         NOT NULL DEFAULT 0,
    last_used_at         timestamptz,
    last_error           text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT api_keys_state_valid CHECK (state IN ('active', 'cooling', 'disabled')),
    CONSTRAINT api_keys_disabled_has_reason CHECK ((state = 'disabled') = (disabled_reason IS NOT NULL)),
    CONSTRAINT api_keys_cooling_has_deadline CHECK (state <> 'cooling' OR cooldown_until IS NOT NULL)
);
COMMENT ON TABLE genq.api_keys IS 'One row per API key id: health, cooldown and counters. Never the secret.';

-- GCRA state per (account or key, model): the provider counts limits per
-- organization/project and model, so keys of one account share a bucket.
-- Two dimensions: requests (cost 1) and images (cost n).
CREATE TABLE genq.key_buckets (
    id                  text             PRIMARY KEY,
    scope               text             NOT NULL,
    model               text             NOT NULL,
    requests_per_minute double precision NOT NULL,
    images_per_minute   double precision,
    burst               int              NOT NULL DEFAULT 1,
    -- configured (from GENQ_KEYS_FILE), learned (x-ratelimit-limit-*), or adaptive (AIMD from 429s)
    limit_source        text             NOT NULL DEFAULT 'adaptive',
    tat_requests        timestamptz      NOT NULL DEFAULT now(),
    tat_images          timestamptz      NOT NULL DEFAULT now(),
    cooldown_until      timestamptz,
    updated_at          timestamptz      NOT NULL DEFAULT now(),
    CONSTRAINT key_buckets_rates_positive CHECK (requests_per_minute > 0 AND (images_per_minute IS NULL OR images_per_minute > 0)),
    CONSTRAINT key_buckets_burst_positive CHECK (burst >= 1),
    CONSTRAINT key_buckets_source_valid CHECK (limit_source IN ('configured', 'learned', 'adaptive')),
    UNIQUE (scope, model)
);
COMMENT ON TABLE genq.key_buckets IS 'Shared token buckets (GCRA theoretical arrival times) per account-or-key and model.';
