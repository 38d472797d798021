-- The audit trail: one hash chain over every record (see src/audit/chain.rs for the canonical
-- form each hash covers). Append-only: the triggers refuse UPDATE and DELETE, and
-- `gatehouse audit verify` detects any change made around them.
CREATE TABLE audit_records (
    seq            BIGINT PRIMARY KEY,   -- 1, 2, 3… assigned under the append lock, no gaps
    id             TEXT NOT NULL UNIQUE, -- ULID
    time           BIGINT NOT NULL,      -- unix milliseconds
    event_id       TEXT NOT NULL,
    kind           TEXT NOT NULL,
    account_id     TEXT,
    handler        TEXT,
    action_type    TEXT,
    action_target  TEXT,
    action_org_wide INTEGER,             -- 0/1 (SQLite has no booleans)
    dry_run        INTEGER NOT NULL,     -- 0/1
    attempt        BIGINT NOT NULL,
    outcome_status TEXT NOT NULL,
    http_status    BIGINT,
    outcome_error  TEXT,
    request_id     TEXT,
    warnings       TEXT,                 -- JSON array of strings; NULL when there are none
    prev_hash      TEXT NOT NULL,
    hash           TEXT NOT NULL
);
CREATE INDEX audit_records_event_id ON audit_records (event_id, seq);
CREATE INDEX audit_records_account_id ON audit_records (account_id, seq);
CREATE INDEX audit_records_time ON audit_records (time);

-- The chain's head, written in the same transaction as each append: a verifier compares it with
-- the last record, so deleting records at the end is detected too.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash TEXT NOT NULL
);
INSERT INTO audit_head (id, seq, hash)
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;
