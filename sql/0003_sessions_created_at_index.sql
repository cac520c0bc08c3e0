-- transactional: false
-- squawk-disable-assume-in-transaction
-- 0003: index on sessions.created_at for retention (sessiondb purge), built without blocking writes.
-- Non-transactional (the directive above, read by yoyo): CREATE INDEX CONCURRENTLY cannot run in a transaction.
-- Locks: CREATE INDEX CONCURRENTLY takes SHARE UPDATE EXCLUSIVE on sessions (reads and writes go on;
--   only other DDL and VACUUM wait) and waits for transactions older than the build to finish.
-- Re-runnable: a failed or cancelled concurrent build leaves an INVALID index behind, which IF NOT EXISTS
--   would keep; the DO block drops such a leftover first (a catalog-only drop: a brief ACCESS EXCLUSIVE
--   lock, bounded by the 5s lock_timeout) and the build starts again.
-- Huge table? Create the same index yourself beforehand; IF NOT EXISTS then makes this a no-op.

SET lock_timeout = '5s';
SET statement_timeout = '30s';

DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index
        WHERE indexrelid = to_regclass('ix_sessions_created_at') AND NOT indisvalid
    ) THEN
        RAISE WARNING 'dropping INVALID index ix_sessions_created_at left by an earlier failed build';
        DROP INDEX ix_sessions_created_at;
    END IF;
END
$$;

-- The build itself only waits on locks that block no reads or writes, so it may wait longer.
SET lock_timeout = '10min';
SET statement_timeout = '2h';

CREATE INDEX CONCURRENTLY IF NOT EXISTS ix_sessions_created_at ON sessions (created_at);

RESET statement_timeout;
RESET lock_timeout;
