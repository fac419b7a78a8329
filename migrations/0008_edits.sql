-- Edits: a job's operation, the images it edits (uploaded, fetched from a
-- URL, or another job's output), and the waiting of an edit whose input job
-- has not succeeded yet.

ALTER TABLE genq.jobs
    ADD COLUMN operation text NOT NULL DEFAULT 'generate',
    -- True while an input job (genq.inputs.from_job) has not succeeded: the
    -- job stays queued and keeps its place, but no claim sees it.
    ADD COLUMN awaiting_input boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT jobs_operation_valid CHECK (operation IN ('generate', 'edit'));

-- The claim indexes leave out jobs that wait for an input, so waiting costs
-- the claims nothing however many edits wait.
DROP INDEX genq.jobs_claim_idx;
DROP INDEX genq.jobs_claim_model_idx;
DROP INDEX genq.jobs_claim_fallback_idx;
CREATE INDEX jobs_claim_idx ON genq.jobs (queue, priority DESC, run_at, seq)
    WHERE state = 'queued' AND NOT awaiting_input;
CREATE INDEX jobs_claim_model_idx ON genq.jobs (queue, model, priority DESC, run_at, seq)
    WHERE state = 'queued' AND NOT awaiting_input;
CREATE INDEX jobs_claim_fallback_idx ON genq.jobs (queue, model, priority DESC, run_at, seq)
    WHERE state = 'queued' AND NOT awaiting_input AND params ? 'fallback_models';

-- Images uploaded through the API (POST /v1/uploads), checked by their bytes.
CREATE TABLE genq.uploads (
    id           uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    content_type text        NOT NULL,
    bytes        int         NOT NULL,
    sha256       text        NOT NULL,
    file_name    text,
    data         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uploads_type_valid CHECK (content_type IN ('image/png', 'image/jpeg', 'image/webp')),
    CONSTRAINT uploads_size_valid CHECK (bytes = octet_length(data) AND bytes BETWEEN 1 AND 52428800)
);
COMMENT ON TABLE genq.uploads IS 'Input images uploaded through POST /v1/uploads; name them in genq.inputs.upload_id.';
CREATE INDEX uploads_created_idx ON genq.uploads (created_at);

-- An edit's input images, in order, and its optional mask: each from exactly
-- one source.
CREATE TABLE genq.inputs (
    job_id     uuid NOT NULL REFERENCES genq.jobs (id) ON DELETE CASCADE,
    role       text NOT NULL DEFAULT 'image',
    position   int  NOT NULL DEFAULT 0,
    upload_id  uuid REFERENCES genq.uploads (id),
    url        text,
    from_job   uuid,
    from_index int  NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, role, position),
    CONSTRAINT inputs_role_valid CHECK (role IN ('image', 'mask')),
    CONSTRAINT inputs_position_valid CHECK (position BETWEEN 0 AND 15 AND (role = 'image' OR position = 0)),
    CONSTRAINT inputs_one_source CHECK (num_nonnulls(upload_id, url, from_job) = 1),
    CONSTRAINT inputs_url_valid CHECK (url IS NULL OR (url ~* '^https?://' AND length(url) <= 4096)),
    CONSTRAINT inputs_from_index_valid CHECK (from_index BETWEEN 0 AND 9)
);
COMMENT ON TABLE genq.inputs IS 'The images an edit job sends (role image, by position) and its mask: an upload, a URL, or image from_index of job from_job.';
CREATE INDEX inputs_from_job_idx ON genq.inputs (from_job) WHERE from_job IS NOT NULL;
CREATE INDEX inputs_upload_idx ON genq.inputs (upload_id) WHERE upload_id IS NOT NULL;

-- An input naming another job: the edit waits while that job is not done,
-- and fails at once if it failed or was cancelled. The input job's row is
-- locked (FOR SHARE) so it cannot finish unseen between the look and the
-- mark.
CREATE FUNCTION genq.input_added() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    source genq.jobs%ROWTYPE;
BEGIN
    IF NEW.from_job IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO source FROM genq.jobs WHERE id = NEW.from_job FOR SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'input job % does not exist', NEW.from_job
            USING ERRCODE = 'foreign_key_violation',
                  HINT = 'from_job must name a job in genq.jobs';
    END IF;
    IF source.state IN ('failed', 'cancelled') THEN
        UPDATE genq.jobs
           SET state = 'failed', finished_at = now(), updated_at = now(), awaiting_input = false,
               last_error = left(format('input job %s %s: %s', source.id, source.state,
                                        coalesce(source.last_error, 'no reason recorded')), 2000)
         WHERE id = NEW.job_id AND state = 'queued';
    ELSIF source.state <> 'succeeded' THEN
        UPDATE genq.jobs SET awaiting_input = true WHERE id = NEW.job_id AND NOT awaiting_input;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER inputs_from_job
    AFTER INSERT ON genq.inputs
    FOR EACH ROW EXECUTE FUNCTION genq.input_added();

-- A job that ends releases the edits waiting for it: when it succeeded, each
-- whose inputs have all succeeded becomes claimable (and workers are woken);
-- when it failed or was cancelled, each fails with the reason (and so on
-- down a chain, as this trigger fires again for them).
CREATE FUNCTION genq.input_job_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state = 'succeeded' THEN
        UPDATE genq.jobs d
           SET awaiting_input = false, updated_at = now()
         WHERE d.awaiting_input
           AND d.id IN (SELECT job_id FROM genq.inputs WHERE from_job = NEW.id)
           AND NOT EXISTS (SELECT 1 FROM genq.inputs i JOIN genq.jobs s ON s.id = i.from_job
                            WHERE i.job_id = d.id AND s.state <> 'succeeded');
        IF FOUND THEN
            PERFORM pg_notify('genq_jobs', NEW.queue);
        END IF;
    ELSE
        UPDATE genq.jobs d
           SET state = 'failed', finished_at = now(), updated_at = now(), awaiting_input = false,
               lease_expires_at = NULL, locked_by = NULL,
               last_error = left(format('input job %s %s: %s', NEW.id, NEW.state,
                                        coalesce(NEW.last_error, 'no reason recorded')), 2000)
         WHERE d.state = 'queued'
           AND d.id IN (SELECT job_id FROM genq.inputs WHERE from_job = NEW.id);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_input_done
    AFTER UPDATE OF state ON genq.jobs
    FOR EACH ROW WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled')
                       AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION genq.input_job_done();

-- A finished edit put back in the queue (a retry) waits again for input jobs
-- that have not succeeded; one whose input job failed cannot be retried
-- before that job is.
CREATE FUNCTION genq.requeued_inputs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    blocker record;
BEGIN
    SELECT s.id, s.state INTO blocker
      FROM genq.inputs i JOIN genq.jobs s ON s.id = i.from_job
     WHERE i.job_id = NEW.id AND s.state IN ('failed', 'cancelled')
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'input job % is %', blocker.id, blocker.state
            USING ERRCODE = 'check_violation',
                  HINT = format('retry job %s first, then this one', blocker.id);
    END IF;
    NEW.awaiting_input := EXISTS (SELECT 1 FROM genq.inputs i JOIN genq.jobs s ON s.id = i.from_job
                                   WHERE i.job_id = NEW.id AND s.state <> 'succeeded');
    RETURN NEW;
END $$;

CREATE TRIGGER jobs_requeue_inputs
    BEFORE UPDATE OF state ON genq.jobs
    FOR EACH ROW WHEN (NEW.state = 'queued' AND OLD.state IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION genq.requeued_inputs();
