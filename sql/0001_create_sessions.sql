-- 0001: the sessions table.
-- Requires PostgreSQL 13+ for the built-in gen_random_uuid() (no pgcrypto extension needed).
-- Locks: creates a new table only; touches no existing object. The timeouts still bound a re-run that
--   finds the table there (CREATE TABLE IF NOT EXISTS, COMMENT ON take locks on it then).

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30s';

DO $$
BEGIN
    IF current_setting('server_version_num')::int < 130000 THEN
        RAISE EXCEPTION 'sessiondb requires PostgreSQL 13 or newer (for the built-in gen_random_uuid()); this server is %',
            current_setting('server_version');
    END IF;
END
$$;

CREATE TABLE IF NOT EXISTS sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now()
);

COMMENT ON TABLE sessions IS 'Anonymous session records: inserted and deleted, never updated. No personal data.';
