-- Rollback of 0002: UPDATE of sessions is allowed again (the model still refuses it).
-- Locks: DROP TRIGGER takes ACCESS EXCLUSIVE on sessions for a catalog-only change; lock_timeout bounds the wait.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30s';

DROP TRIGGER IF EXISTS sessions_immutable ON sessions;
-- Only 0002's trigger calls this function, and that trigger is gone by now:
-- squawk-ignore ban-drop-function
DROP FUNCTION IF EXISTS sessions_reject_update();
