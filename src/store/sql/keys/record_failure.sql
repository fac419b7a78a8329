-- A transient failure on key $1 (error $2): after $3 in a row its circuit
-- opens for $4. Returns its consecutive failures.
UPDATE genq.api_keys
    SET error_count = error_count + 1, consecutive_failures = consecutive_failures + 1,
        last_error = $2, last_used_at = now(), updated_at = now(),
        state = CASE WHEN state <> 'disabled' AND consecutive_failures + 1 >= $3 THEN 'cooling' ELSE state END,
        cooldown_until = CASE WHEN state <> 'disabled' AND consecutive_failures + 1 >= $3
                              THEN greatest(cooldown_until, now() + $4) ELSE cooldown_until END
  WHERE id = $1
 RETURNING consecutive_failures
