-- Rollback of 0001: drops the sessions table and every row in it.
-- Locks: DROP TABLE takes ACCESS EXCLUSIVE on sessions; lock_timeout makes it give up rather than queue
--   every reader and writer behind a long transaction.

SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '30s';

-- Dropping the table 0001 created is the point of this file: a deliberate, destructive step run by hand.
-- squawk-ignore ban-drop-table
DROP TABLE IF EXISTS sessions;
