-- Worker-side dedupe: one row per fact (envelope dedupe key), claimed atomically before acting.
CREATE TABLE dedupe_claims (
    dedupe_key   TEXT PRIMARY KEY,
    event_id     TEXT NOT NULL,
    state        TEXT NOT NULL,          -- processing | completed | released
    owner        TEXT NOT NULL,          -- the worker instance holding the claim
    lease_until  BIGINT NOT NULL,        -- unix ms; a crashed worker's claim is taken over after it
    claimed_at   BIGINT NOT NULL,
    completed_at BIGINT,
    expires_at   BIGINT NOT NULL         -- completed claims are forgotten after the retention
);
CREATE INDEX dedupe_claims_expiry ON dedupe_claims (expires_at);

-- Dead letters of both backends: what could not be processed, why, and its failure history.
CREATE TABLE dead_letters (
    id               TEXT PRIMARY KEY,   -- ULID of this dead-lettering
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    subject          TEXT,               -- account id or group, for listings
    routing_key      TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    body             TEXT NOT NULL,      -- the envelope, as published
    reason           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    first_failure_at BIGINT,
    last_failure_at  BIGINT,
    history          TEXT NOT NULL,      -- JSON array of {attempt, at, error}
    dead_at          BIGINT NOT NULL,
    state            TEXT NOT NULL,      -- dead | replayed
    replayed_at      BIGINT
);
CREATE INDEX dead_letters_state ON dead_letters (state, dead_at);

-- The embedded queue backend: the work queue as rows.
CREATE TABLE queue_messages (
    id               BIGSERIAL PRIMARY KEY,
    routing_key      TEXT NOT NULL,
    message_id       TEXT NOT NULL,
    event_id         TEXT NOT NULL,
    event_type       TEXT NOT NULL,
    body             TEXT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,  -- failed processing attempts so far
    deliveries       BIGINT NOT NULL DEFAULT 0,  -- times handed to a worker (poison detection)
    visible_at       BIGINT NOT NULL,            -- delayed retries wait until then
    locked_by        TEXT,
    locked_until     BIGINT,                     -- visibility timeout of the current delivery
    first_failure_at BIGINT,
    last_failure_at  BIGINT,
    history          TEXT NOT NULL DEFAULT '[]',
    created_at       BIGINT NOT NULL
);
CREATE INDEX queue_messages_ready ON queue_messages (visible_at, id);
