-- Completion events inside PostgreSQL: when a job reaches a final state, a
-- NOTIFY on channel genq_job_done carries {"id", "state", "queue"} as JSON,
-- sent when the transaction that ended the job commits (never for one that
-- rolls back). Producers LISTEN genq_job_done instead of polling.
CREATE FUNCTION genq.notify_job_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('genq_job_done',
                      json_build_object('id', NEW.id, 'state', NEW.state, 'queue', NEW.queue)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER jobs_notify_done
    AFTER UPDATE OF state ON genq.jobs
    FOR EACH ROW WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled')
                       AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION genq.notify_job_done();

CREATE TRIGGER jobs_notify_done_insert
    AFTER INSERT ON genq.jobs
    FOR EACH ROW WHEN (NEW.state IN ('succeeded', 'failed', 'cancelled'))
    EXECUTE FUNCTION genq.notify_job_done();
