-- The operator console's sessions: only a SHA-256 of each session id is kept, so whoever reads
-- the store cannot sign in with what they read. The operator's role is read from config on
-- every request, never stored.
CREATE TABLE console_sessions (
    id_hash     TEXT PRIMARY KEY,        -- hex SHA-256 of the 256-bit session id in the cookie
    operator    TEXT NOT NULL,           -- [[console.operators]] name
    method      TEXT NOT NULL,           -- 'password' or 'proxy'
    created_at  BIGINT NOT NULL,         -- unix ms
    expires_at  BIGINT NOT NULL          -- unix ms
);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

-- The last run of each tenant's background reconciler, for the console: when, what it found (a
-- JSON array), or why it failed.
CREATE TABLE reconcile_runs (
    tenant           TEXT PRIMARY KEY,
    ran_at           BIGINT NOT NULL,    -- unix ms
    findings         TEXT NOT NULL,      -- JSON array of {event_type, account_id, group, reason}
    groups_scanned   BIGINT NOT NULL,
    accounts_checked BIGINT NOT NULL,
    awaiting_approval TEXT NOT NULL,     -- JSON array of accounts whose plan already waits for a person
    error            TEXT                -- the run failed: why (findings then empty)
);
