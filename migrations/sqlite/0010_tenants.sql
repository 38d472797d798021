-- Tenants: several Atlassian organizations and sites in one deployment. What was kept for the one
-- tenant before belongs to the tenant a legacy `[atlassian]` section becomes, `default`.

-- The tenant an audit record is about (NULL: written before, or about no tenant, e.g. a refused
-- Connect install from a site no tenant names).
ALTER TABLE audit_records ADD COLUMN tenant TEXT;
CREATE INDEX audit_records_tenant_seq ON audit_records (tenant, seq);

-- Decisions are ordered per tenant: one person may be in several organizations, each deciding
-- for itself.
CREATE TABLE account_decisions_by_tenant (
    tenant      TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    decided_at  BIGINT NOT NULL,
    event_id    TEXT NOT NULL,
    event_type  TEXT NOT NULL,
    source      TEXT NOT NULL,
    PRIMARY KEY (tenant, account_id)
);
INSERT INTO account_decisions_by_tenant (tenant, account_id, decided_at, event_id, event_type, source)
    SELECT 'default', account_id, decided_at, event_id, event_type, source FROM account_decisions;
DROP TABLE account_decisions;
ALTER TABLE account_decisions_by_tenant RENAME TO account_decisions;

-- Protected groups' last seen members, per tenant (group ids are only unique within a site).
CREATE TABLE group_snapshots_by_tenant (
    tenant     TEXT NOT NULL,
    group_id   TEXT NOT NULL,
    group_name TEXT NOT NULL,
    members    TEXT NOT NULL,
    taken_at   BIGINT NOT NULL,
    PRIMARY KEY (tenant, group_id)
);
INSERT INTO group_snapshots_by_tenant (tenant, group_id, group_name, members, taken_at)
    SELECT 'default', group_id, group_name, members, taken_at FROM group_snapshots;
DROP TABLE group_snapshots;
ALTER TABLE group_snapshots_by_tenant RENAME TO group_snapshots;

-- The events-stream cursor and request times are per tenant (`{name}@{tenant}`).
UPDATE poll_cursors SET name = name || '@default' WHERE name = 'org-events';
UPDATE request_log SET name = name || '@default' WHERE name = 'org-events';
