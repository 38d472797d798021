-- Connect lifecycle tokens already spent. Atlassian's token on `installed` and `uninstalled`
-- signs the request line, not the body, and the body carries the shared secret: a token seen in
-- a log or a proxy could otherwise install a secret of its holder's choosing (or uninstall the
-- site again) until it expires. Each token changes an installation once, in the transaction that
-- makes the change, with the body it came with (the same body again changes nothing and is
-- answered as done: a retry whose answer was lost). Rows are purged well after the token expired.
CREATE TABLE connect_spent_tokens (
    token_sha256 TEXT PRIMARY KEY,   -- the token's fingerprint (jwt::UnverifiedToken::fingerprint), never the token
    body_sha256  TEXT NOT NULL,      -- hex SHA-256 of the body it carried
    expires_at   BIGINT NOT NULL     -- unix ms: when the token stops verifying (exp + leeway + 1 s)
);
CREATE INDEX connect_spent_tokens_expiry ON connect_spent_tokens (expires_at);
