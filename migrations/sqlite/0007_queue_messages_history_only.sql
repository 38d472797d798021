-- A queued message's failures live in its `history` (what workers and dead letters read); the
-- separate counters written beside it were never read.
ALTER TABLE queue_messages DROP COLUMN attempts;
ALTER TABLE queue_messages DROP COLUMN first_failure_at;
ALTER TABLE queue_messages DROP COLUMN last_failure_at;
