-- Gives unused slots back: each bucket's TAT moves back by what they cost,
-- never before now().
UPDATE genq.key_buckets b
    SET tat_requests = greatest(now(), b.tat_requests - make_interval(secs => 60.0 / b.requests_per_minute * u.requests)),
        tat_images = CASE WHEN b.images_per_minute IS NULL THEN b.tat_images
                     ELSE greatest(now(), b.tat_images - make_interval(secs => 60.0 / b.images_per_minute * u.images)) END,
        day_requests = greatest(0, b.day_requests - u.requests),
        day_images = greatest(0, b.day_images - u.images),
        updated_at = now()
   FROM (SELECT id, sum(requests) AS requests, sum(images) AS images
           FROM unnest($1::text[], $2::int[], $3::int[]) AS t(id, requests, images) GROUP BY id) u
  WHERE b.id = u.id
