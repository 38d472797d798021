-- The outbox: deliveries to `[[outbound]]` endpoints and Slack, written in the same transaction
-- as what they carry (an event's claim, an audit record, a pending approval), then sent at least
-- once by the workers, retried on a ladder, dead after it (`gatehouse outbound replay`).
CREATE TABLE outbound_deliveries (
    id              TEXT PRIMARY KEY,       -- ULID; the `webhook-id` every attempt carries
    endpoint        TEXT NOT NULL,          -- `[[outbound]] name`, or `slack`
    source_key      TEXT NOT NULL,          -- what it carries (`event:ID`, `audit:SEQ`, …): once per endpoint
    message_type    TEXT NOT NULL,          -- `user.deactivated`, `audit.executed`, `slack.approval`, …
    url             TEXT,                   -- a target of its own (a Slack response_url); else the endpoint's
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,          -- pending | delivered | dead
    attempts        BIGINT NOT NULL DEFAULT 0,  -- every attempt ever made
    failures        BIGINT NOT NULL DEFAULT 0,  -- failed attempts since created or replayed: the rung
    next_attempt_at BIGINT NOT NULL,        -- unix ms
    locked_by       TEXT,
    locked_until    BIGINT,                 -- unix ms; a dead sender's delivery is taken over after it
    last_status     BIGINT,                 -- the last attempt's HTTP status, when it got one
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,                 -- delivered or dead at
    UNIQUE (endpoint, source_key)
);
CREATE INDEX outbound_due ON outbound_deliveries (endpoint, state, next_attempt_at);
CREATE INDEX outbound_finished ON outbound_deliveries (state, finished_at);

-- One compact row per attempt (not an audit record each).
CREATE TABLE outbound_attempts (
    delivery_id TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    at          BIGINT NOT NULL,            -- unix ms
    millis      BIGINT NOT NULL,            -- how long it took
    status      BIGINT,                     -- HTTP status, when there was a response
    error       TEXT,                       -- why it failed, when it did
    PRIMARY KEY (delivery_id, attempt)
);
