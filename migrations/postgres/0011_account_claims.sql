-- One account at a time: the delivery acting on an account holds its row (with a lease it
-- renews) until it is settled, so two events about one person are never acted on concurrently
-- by different workers. Rows are deleted on release; a dead worker's row is taken over once its
-- lease ran out.
CREATE TABLE account_claims (
    tenant      TEXT NOT NULL,
    account_id  TEXT NOT NULL,
    owner       TEXT NOT NULL,           -- the delivery holding the account (one owner per delivery)
    event_id    TEXT NOT NULL,           -- what it is acting on, for the logs of those who wait
    lease_until BIGINT NOT NULL,         -- unix ms
    PRIMARY KEY (tenant, account_id)
);
CREATE INDEX account_claims_lease ON account_claims (lease_until);
