-- The ingestion pipeline: sources, dead letters, rollups, the batch ledger, alerts.

-- Where records come from (besides plain pushes), and how they are transformed.
CREATE TABLE sources (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,62}$'),
    category   text NOT NULL REFERENCES categories ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('http_push', 'nats', 'http_poll', 'file', 'exec')),
    config     jsonb NOT NULL DEFAULT '{}',
    transform  jsonb NOT NULL DEFAULT '{}',
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- What a source remembers between runs (http_poll: the newest time taken per target).
CREATE TABLE source_state (
    source_id  uuid PRIMARY KEY REFERENCES sources ON DELETE CASCADE,
    state      jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Records that failed transformation or validation, with what is needed to fix and
-- replay them.
CREATE TABLE dead_letters (
    id             uuid PRIMARY KEY,
    category       text NOT NULL,
    source         text NOT NULL,
    position       text NOT NULL,
    raw            jsonb NOT NULL,
    reasons        jsonb NOT NULL,
    schema_version integer NOT NULL,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'replayed')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_pending ON dead_letters (category, created_at) WHERE status = 'pending';

-- 1-minute and 1-hour rollups per category, target and numeric field, maintained in the
-- transaction that stores the records.
CREATE TABLE rollups (
    category text NOT NULL,
    width    text NOT NULL CHECK (width IN ('1m', '1h')),
    target   text NOT NULL,
    field    text NOT NULL,
    bucket   timestamptz NOT NULL,
    count    bigint NOT NULL,
    min      double precision NOT NULL,
    max      double precision NOT NULL,
    sum      double precision NOT NULL,
    PRIMARY KEY (category, width, field, target, bucket)
);

-- One row per stored batch: a JetStream message (stream_seq) or an api insert. `new_rows`
-- and `checksum` (bit_xor of hashtextextended(id::text, 0) of the rows it added) let
-- the reconciliation compare what was written with what is stored.
CREATE TABLE ingest_batches (
    id           bigserial PRIMARY KEY,
    stream       text,
    stream_seq   bigint,
    category     text,
    records      integer NOT NULL,
    new_rows     integer NOT NULL,
    checksum     bigint NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream, stream_seq)
);
CREATE INDEX ingest_batches_category ON ingest_batches (category);

-- Alert rules: a threshold on a field, or no data from a target for a window.
CREATE TABLE alert_rules (
    id         uuid PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    category   text NOT NULL REFERENCES categories ON DELETE CASCADE,
    kind       text NOT NULL CHECK (kind IN ('threshold', 'absence')),
    field      text,
    op         text CHECK (op IN ('gt', 'gte', 'lt', 'lte', 'eq', 'ne')),
    value      double precision,
    target     text,
    window_secs integer NOT NULL DEFAULT 60,
    webhooks   text[] NOT NULL DEFAULT '{}',
    enabled    boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Whether a rule fires for a target; the row lock makes one instance own a transition.
CREATE TABLE alert_state (
    rule_id    uuid NOT NULL REFERENCES alert_rules ON DELETE CASCADE,
    target     text NOT NULL,
    firing     boolean NOT NULL,
    last_seen  timestamptz NOT NULL,
    changed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule_id, target)
);

-- Every firing and resolved notification.
CREATE TABLE alerts (
    id          uuid PRIMARY KEY,
    rule_id     uuid REFERENCES alert_rules ON DELETE SET NULL,
    rule        text NOT NULL,
    category    text NOT NULL,
    target      text NOT NULL,
    state       text NOT NULL CHECK (state IN ('firing', 'resolved')),
    value       double precision,
    message     text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    -- Delivery (NATS, then the rule's webhooks) is an outbox: retried with backoff until
    -- done, by whichever data-consumer claims the row.
    done            boolean NOT NULL DEFAULT false,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text
);
CREATE INDEX alerts_pending ON alerts (next_attempt_at) WHERE NOT done;
CREATE INDEX alerts_category_at ON alerts (category, at);

-- Rows stored before the ledger existed count as one baseline batch per category, so
-- the reconciliation of an upgraded installation starts from what is there.
DO $$
DECLARE
    c record;
    n bigint;
    x bigint;
BEGIN
    FOR c IN SELECT name FROM categories LOOP
        EXECUTE format('SELECT count(*), coalesce(bit_xor(hashtextextended(id::text, 0)), 0) FROM %I',
                       'rec_' || c.name) INTO n, x;
        IF n > 0 THEN
            INSERT INTO ingest_batches (stream, stream_seq, category, records, new_rows, checksum)
            VALUES (NULL, NULL, c.name, n, n, x);
        END IF;
    END LOOP;
END $$;
