-- Books a request of $2 images on bucket $1 as sent now.
UPDATE genq.key_buckets
    SET tat_requests = greatest(tat_requests, now() + make_interval(secs => 60.0 / requests_per_minute)),
        tat_images = CASE WHEN images_per_minute IS NULL THEN tat_images
                     ELSE greatest(tat_images, now() + make_interval(secs => 60.0 / images_per_minute * $2)) END
  WHERE id = $1
