-- Every budget (only those used up, with $1) with its spend, window and
-- reason; how long until it resets, by the database's clock.
SELECT scope AS "scope!: Scope", name AS "name!", period AS "period!: Period",
       (cap_usd * 1000000000)::int8 AS "cap_usd!: Usd",
       (spent_usd * 1000000000)::int8 AS "spent_usd!: Usd",
       (in_flight_usd * 1000000000)::int8 AS "in_flight_usd!: Usd",
       window_start AS "window_start!", resets_at AS "resets_at!",
       greatest(extract(epoch FROM resets_at - now()), 0)::float8 AS "resets_in_secs!",
       exhausted AS "exhausted!", reason AS "reason!"
  FROM genq.budget_status
 WHERE exhausted OR NOT $1
 ORDER BY scope, name, period
