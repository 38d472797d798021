-- Connect installations: the shared secret each Atlassian site signs its webhooks with.
CREATE TABLE connect_installations (
    client_key    TEXT PRIMARY KEY,
    shared_secret TEXT NOT NULL,
    base_url      TEXT NOT NULL,
    cloud_id      TEXT,
    installed_at  BIGINT NOT NULL,  -- unix milliseconds
    updated_at    BIGINT NOT NULL
);
