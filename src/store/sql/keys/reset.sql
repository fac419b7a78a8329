-- Forgets key $1's counters and what was learned about its buckets' limits
-- (learned and adaptive buckets no other key shares are deleted).
WITH k AS (
    UPDATE genq.api_keys
       SET ok_count = 0, rate_limited_count = 0, error_count = 0, retested_at = NULL,
           last_error = NULL, updated_at = now()
     WHERE id = $1
    RETURNING coalesce(account, discovered_account, id) AS scope)
 DELETE FROM genq.key_buckets b
  USING k
  WHERE b.scope = k.scope AND b.limit_source <> 'configured'
    AND NOT EXISTS (SELECT 1 FROM genq.api_keys o WHERE o.id <> $1 AND coalesce(o.account, o.discovered_account, o.id) = k.scope)
