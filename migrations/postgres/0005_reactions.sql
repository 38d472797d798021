-- Actions performed, by idempotency key: an action with a key found here is never performed again.
CREATE TABLE executed_actions (
    idempotency_key TEXT PRIMARY KEY,
    event_id        TEXT NOT NULL,
    handler         TEXT NOT NULL,
    action_type     TEXT NOT NULL,
    target          TEXT NOT NULL,
    request_id      TEXT,
    executed_at     BIGINT NOT NULL
);
CREATE INDEX executed_actions_event ON executed_actions (event_id);

-- Plans waiting for (or decided by) a person.
CREATE TABLE approvals (
    id          TEXT PRIMARY KEY,            -- ULID
    event_id    TEXT NOT NULL,
    handler     TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    account_id  TEXT,
    plan        TEXT NOT NULL,               -- the plan as recorded: exactly what approval performs
    envelope    TEXT NOT NULL,
    state       TEXT NOT NULL,               -- pending | approved | rejected | executed
    created_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  TEXT,
    note        TEXT,
    UNIQUE (event_id, handler)
);
CREATE INDEX approvals_state ON approvals (state, created_at);
