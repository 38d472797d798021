-- When an approved plan was handed to the queue (unix ms). The decision commits first and the
-- plan is queued after it, so a process that stops in between, or a broker that refuses the
-- publish, leaves a plan approved and never queued: such plans (approved, `queued_at` unset) are
-- queued by the approvals sweep. A click on a plan queued already decides nothing.
ALTER TABLE approvals ADD COLUMN queued_at BIGINT;
-- Decided before this column existed: taken as queued (their decisions queued them).
UPDATE approvals SET queued_at = decided_at WHERE state <> 'pending';
