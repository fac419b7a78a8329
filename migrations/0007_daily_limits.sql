-- Daily caps (some tiers allow a few hundred image requests a day): a
-- window of day_secs that starts with its first request, and what it used.
ALTER TABLE genq.key_buckets
    ADD COLUMN requests_per_day int,
    ADD COLUMN images_per_day   int,
    ADD COLUMN day_secs         double precision NOT NULL DEFAULT 86400,
    ADD COLUMN day_started_at   timestamptz,
    ADD COLUMN day_requests     int NOT NULL DEFAULT 0,
    ADD COLUMN day_images       int NOT NULL DEFAULT 0,
    ADD CONSTRAINT key_buckets_daily_positive
        CHECK ((requests_per_day IS NULL OR requests_per_day > 0)
               AND (images_per_day IS NULL OR images_per_day > 0) AND day_secs > 0);

-- What discovering an unannounced limit learned (keys::adapt::DiscoveryState),
-- so a restarted worker resumes the search where it was, not from scratch.
ALTER TABLE genq.key_buckets ADD COLUMN discovery jsonb;
