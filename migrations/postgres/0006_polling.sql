-- Where each poller stopped (the events-stream cursor), saved after a page is durably queued.
CREATE TABLE poll_cursors (
    name       TEXT PRIMARY KEY,
    cursor     TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Who runs a singleton job (the poller, the periodic reconciler) among many processes.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    lease_until BIGINT NOT NULL
);

-- The last seen members of each protected group, to find changes no webhook reported.
CREATE TABLE group_snapshots (
    group_id   TEXT PRIMARY KEY,
    group_name TEXT NOT NULL,
    members    TEXT NOT NULL,   -- JSON array of account ids, sorted
    taken_at   BIGINT NOT NULL
);
