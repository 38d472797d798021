-- The latest decision about each account (a source with authority = "decision": HR, an IdP),
-- by its own time: an older decision arriving later is superseded, never performed.
CREATE TABLE account_decisions (
    account_id  TEXT PRIMARY KEY,
    decided_at  BIGINT NOT NULL,   -- unix milliseconds, the decision's own (signed) time
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    source      TEXT NOT NULL
);

-- Whether a record's event was an observation of Atlassian's state or a decision made
-- elsewhere. NULL on records written before, and on records about no event's authority.
ALTER TABLE audit_records ADD COLUMN authority TEXT;
