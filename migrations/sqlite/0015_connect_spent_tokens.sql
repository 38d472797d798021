-- Connect lifecycle tokens already spent. Atlassian's token on `installed` and `uninstalled`
-- signs the request line, not the body, and the body carries the shared secret: a token seen in
-- a log or a proxy could otherwise install a secret of its holder's choosing (or uninstall the
-- site again) until it expires. Each token changes an installation once, in the transaction that
-- makes the change; rows are purged once the token has expired.
CREATE TABLE connect_spent_tokens (
    token_sha256 TEXT PRIMARY KEY,   -- hex SHA-256 of the token as sent, never the token
    expires_at   BIGINT NOT NULL     -- unix ms: the token's `exp` plus the accepted leeway
);
CREATE INDEX connect_spent_tokens_expiry ON connect_spent_tokens (expires_at);
