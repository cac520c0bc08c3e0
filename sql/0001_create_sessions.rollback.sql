-- Rollback of 0001: drops the sessions table and every row in it.
DROP TABLE IF EXISTS sessions;
