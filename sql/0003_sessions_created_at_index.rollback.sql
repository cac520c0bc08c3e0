-- transactional: false
-- squawk-disable-assume-in-transaction
-- Rollback of 0003: drops the created_at index without blocking reads or writes (purge then scans the table).
-- Locks: DROP INDEX CONCURRENTLY takes SHARE UPDATE EXCLUSIVE on sessions and waits for transactions using it.

SET lock_timeout = '10min';
SET statement_timeout = '30min';

DROP INDEX CONCURRENTLY IF EXISTS ix_sessions_created_at;

RESET statement_timeout;
RESET lock_timeout;
