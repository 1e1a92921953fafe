-- What the web console shows besides the records themselves.

-- A dead letter keeps the payload as received beside a user's fix (`raw` is what a
-- replay sends; `original` is set at the first edit and never changed after).
ALTER TABLE dead_letters ADD COLUMN original jsonb;
-- Rejections per source and time (the dashboard's last hour, a source's reject ratio).
CREATE INDEX dead_letters_created ON dead_letters (created_at);

-- Which source a stored batch came from (`api` for the api's inserts; NULL before
-- this version), and an index by time for the ingest rates of the last hour.
ALTER TABLE ingest_batches ADD COLUMN source text;
CREATE INDEX ingest_batches_committed ON ingest_batches (committed_at);
CREATE INDEX ingest_batches_source ON ingest_batches (source, committed_at);

-- What the data-manager last said of a source's runner (file, exec, http_poll).
CREATE TABLE source_status (
    source_id uuid PRIMARY KEY REFERENCES sources ON DELETE CASCADE,
    state     text NOT NULL CHECK (state IN ('running', 'failed', 'stopped')),
    detail    text NOT NULL DEFAULT '',
    at        timestamptz NOT NULL DEFAULT now()
);

-- Record tables with native partitions get an index on ts, so the newest records of
-- a category (the explorer's first page, without a target) are read from its end
-- instead of sorting the table. TimescaleDB's hypertables have one already.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN SELECT name FROM categories LOOP
        IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'rec_' || c.name AND relkind = 'p') THEN
            EXECUTE format('CREATE INDEX ON %I (ts)', 'rec_' || c.name);
        END IF;
    END LOOP;
END $$;
