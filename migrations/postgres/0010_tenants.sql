-- Tenants: several Atlassian organizations and sites in one deployment. What was kept for the one
-- tenant before belongs to the tenant a legacy `[atlassian]` section becomes, `default`.

-- The tenant an audit record is about (NULL: written before, or about no tenant, e.g. a refused
-- Connect install from a site no tenant names).
ALTER TABLE audit_records ADD COLUMN tenant TEXT;
CREATE INDEX audit_records_tenant_seq ON audit_records (tenant, seq);

-- Decisions are ordered per tenant: one person may be in several organizations, each deciding
-- for itself.
ALTER TABLE account_decisions ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE account_decisions ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE account_decisions DROP CONSTRAINT account_decisions_pkey;
ALTER TABLE account_decisions ADD PRIMARY KEY (tenant, account_id);

-- Protected groups' last seen members, per tenant (group ids are only unique within a site).
ALTER TABLE group_snapshots ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
ALTER TABLE group_snapshots ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE group_snapshots DROP CONSTRAINT group_snapshots_pkey;
ALTER TABLE group_snapshots ADD PRIMARY KEY (tenant, group_id);

-- The events-stream cursor and request times are per tenant (`{name}@{tenant}`).
UPDATE poll_cursors SET name = name || '@default' WHERE name = 'org-events';
UPDATE request_log SET name = name || '@default' WHERE name = 'org-events';
