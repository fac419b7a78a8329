-- Cools key $1 and bucket $2 for $3 seconds from now() (never shortening a
-- later deadline), reason $4; a non-configured bucket's rate drops to $5 if
-- given. After the cooldown the bucket has room for one request, then the
-- steady rate. Returns the seconds the key now cools.
WITH k AS (
    UPDATE genq.api_keys
       SET state = CASE WHEN state = 'disabled' THEN state ELSE 'cooling' END,
           cooldown_until = greatest(cooldown_until, now() + make_interval(secs => $3)),
           last_error = $4, updated_at = now()
     WHERE id = $1
    RETURNING cooldown_until)
 UPDATE genq.key_buckets b
    SET cooldown_until = greatest(b.cooldown_until, now() + make_interval(secs => $3)),
        -- after the cooldown: room for exactly one request, then the steady rate
        tat_requests = greatest(b.tat_requests,
                         greatest(b.cooldown_until, now() + make_interval(secs => $3))
                         + make_interval(secs => 60.0 / coalesce($5, b.requests_per_minute) * (b.burst - 1))),
        requests_per_minute = CASE WHEN b.limit_source = 'configured' OR $5 IS NULL
                                   THEN b.requests_per_minute ELSE $5 END,
        updated_at = now()
   WHERE b.id = $2
 RETURNING greatest(0, extract(epoch FROM greatest(b.cooldown_until, (SELECT cooldown_until FROM k)) - now()))::float8 AS "left!"
