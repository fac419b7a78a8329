-- Re-enables key $1 now, on every replica: its cooldown, model blocks and
-- its buckets' cooldowns are lifted, and the buckets have room at once.
WITH before AS (
    -- the snapshot before this statement: was the key held back?
    SELECT state <> 'active' OR coalesce(cooldown_until > now(), false) AS held
      FROM genq.api_keys WHERE id = $1
 ), k AS (
    UPDATE genq.api_keys
       SET state = 'active', disabled_reason = NULL, disabled_at = NULL, cooldown_until = NULL,
           consecutive_failures = 0, consecutive_429 = 0, updated_at = now()
     WHERE id = $1
    RETURNING coalesce(account, discovered_account, id) AS scope
 ), unblocked AS (
    DELETE FROM genq.key_model_blocks WHERE key_id = $1
 ), b AS (
    UPDATE genq.key_buckets b
       SET cooldown_until = NULL, tat_requests = least(b.tat_requests, now()),
           tat_images = least(b.tat_images, now()), updated_at = now()
      FROM k, before
     WHERE b.scope = k.scope
       AND (b.cooldown_until IS NOT NULL OR before.held)
 )
 SELECT count(*) AS "found!" FROM k
