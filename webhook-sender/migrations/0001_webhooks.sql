-- Registered endpoints, what is owed to them, and how far the event stream
-- has been read. Applied once, in order, by src/db.rs.

CREATE TABLE webhook_endpoints (
    id text PRIMARY KEY,
    url text NOT NULL,
    description text NOT NULL DEFAULT '',
    filters jsonb NOT NULL,
    secret bytea NOT NULL,
    -- During a rotation the previous secret signs too, until it expires.
    previous_secret bytea,
    previous_secret_until timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz,
    disabled_reason text,
    last_success_at timestamptz,
    -- The first failure since the last success: a long streak disables.
    failing_since timestamptz
);

-- One row per (endpoint, stream record): its id is the webhook-id, the
-- same on every attempt.
CREATE TABLE webhook_deliveries (
    id text PRIMARY KEY,
    endpoint_id text NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    stream_offset bigint NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    body bytea NOT NULL,
    -- The trace the answer was recorded in: each attempt joins it.
    traceparent text,
    created_at timestamptz NOT NULL DEFAULT now(),
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'delivered', 'exhausted', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A sender working on it holds it until then; after a crash another
    -- takes it over.
    claimed_until timestamptz,
    -- Which claim holds it: only that claim may record its attempt.
    claimed_by text,
    last_attempt_at timestamptz,
    last_status integer,
    last_error text,
    finished_at timestamptz,
    UNIQUE (endpoint_id, stream_offset)
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE state = 'pending';

CREATE TABLE webhook_attempts (
    delivery_id text NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    endpoint_id text NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    status integer,
    error text,
    duration_ms integer NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

CREATE INDEX webhook_attempts_by_endpoint ON webhook_attempts (endpoint_id, at DESC);

-- The next stream offset to read, per stream.
CREATE TABLE webhook_stream_offsets (
    stream text PRIMARY KEY,
    next_offset bigint NOT NULL
);
