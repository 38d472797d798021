-- OAuth 2.0 grants with rotating refresh tokens: the live refresh token of each grant, written
-- (and committed) before the access token it came with is used, so a crash never leaves
-- gatehouse holding only a retired token. Also the current access token, so several gatehouse
-- processes share one instead of each refreshing.
CREATE TABLE oauth_tokens (
    grant_key         TEXT PRIMARY KEY,  -- "{client_id}@{cloud_id}"
    refresh_token     TEXT NOT NULL,
    seed_fingerprint  TEXT NOT NULL,     -- SHA-256 of the configured refresh token: a new one in config replaces the row
    access_token      TEXT,
    access_expires_at BIGINT,            -- unix milliseconds
    generation        BIGINT NOT NULL,   -- +1 per rotation; compare-and-set guard
    lease_until       BIGINT,            -- unix milliseconds: a process is refreshing until then
    updated_at        BIGINT NOT NULL
);
