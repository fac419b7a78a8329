-- Renews the leases (by $2 seconds) of the jobs worker $1 still tracks:
-- ids $3 at attempts $4.
UPDATE genq.jobs j SET lease_expires_at = now() + make_interval(secs => $2)
  FROM unnest($3::uuid[], $4::int[]) AS h(id, attempt)
 WHERE j.id = h.id AND j.attempts = h.attempt
   AND j.state = 'running' AND j.locked_by = $1
