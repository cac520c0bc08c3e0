-- 0002: sessions rows are immutable in the database itself: any UPDATE of sessions fails, for every role.
-- Locks: CREATE TRIGGER and ALTER TABLE ... ENABLE ALWAYS TRIGGER take SHARE ROW EXCLUSIVE on sessions
--   (blocks writes, not reads) for a catalog-only change, so it is held for milliseconds; lock_timeout
--   bounds the wait behind long transactions. Re-runnable: every statement checks what already exists.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30s';

CREATE OR REPLACE FUNCTION sessions_reject_update() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'sessions rows are immutable: UPDATE of sessions is not allowed'
        USING ERRCODE = 'restrict_violation',
              HINT = 'delete the session and create a new one (sessiondb migration 0002)';
END
$$;

-- Statement-level, so even an UPDATE matching no row fails: the guarantee does not depend on data.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_trigger
        WHERE tgrelid = 'sessions'::regclass AND tgname = 'sessions_immutable' AND NOT tgisinternal
    ) THEN
        CREATE TRIGGER sessions_immutable
            BEFORE UPDATE ON sessions
            FOR EACH STATEMENT EXECUTE FUNCTION sessions_reject_update();
    END IF;
END
$$;

-- ALWAYS: also fires under session_replication_role = replica, the usual way a superuser skips triggers.
ALTER TABLE sessions ENABLE ALWAYS TRIGGER sessions_immutable;
