-- Every key with its effective state, cooldown, counters, and the limits of
-- its buckets and its blocked models, and what its billed calls cost.
SELECT k.id, coalesce(k.account, k.discovered_account) AS account,
        CASE WHEN k.account IS NOT NULL THEN 'configured'
             WHEN k.discovered_account IS NOT NULL THEN 'provider headers' END AS account_source,
        CASE WHEN k.state = 'cooling' AND k.cooldown_until <= now() THEN 'active' ELSE k.state END AS "state!: KeyState",
        k.cooldown_until,
        CASE WHEN k.cooldown_until > now()
             THEN extract(epoch FROM k.cooldown_until - now())::float8 END AS cooldown_remaining_secs,
        k.disabled_reason, k.ok_count, k.rate_limited_count, k.error_count, k.last_used_at, k.last_error,
        coalesce((SELECT array_agg(format('%s=%s/min (%s)', b.model, round(b.requests_per_minute::numeric, 1),
                                          b.limit_source) ORDER BY b.model)
                    FROM genq.key_buckets b WHERE b.scope = coalesce(k.account, k.discovered_account, k.id)), '{}') AS "limits!",
        coalesce((SELECT array_agg(format('%s: %s', m.model, m.reason) ORDER BY m.model)
                    FROM genq.key_model_blocks m WHERE m.key_id = k.id), '{}') AS "blocked_models!",
        coalesce((SELECT (sum(s.cost_usd) * 1000000000)::int8 FROM genq.spend s WHERE s.key_id = k.id), 0)
            AS "cost_usd!: crate::cost::Usd"
   FROM genq.api_keys k
  ORDER BY k.id
