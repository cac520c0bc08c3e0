"""sessiondb: anonymous session records in PostgreSQL, on SQLAlchemy 2 and a tuned asyncpg pool."""

from sessiondb.database import Database
from sessiondb.errors import (
    ConcurrentSessionUse,
    ConfigurationError,
    ConnectionLost,
    DatabaseUnavailable,
    EmbeddedServerError,
    ImmutableSessionError,
    InvalidSessionId,
    MigrationError,
    NaiveDatetimeError,
    NotADatetimeError,
    PoolTimeout,
    QueryTimeout,
    SessionDBError,
    WrongEventLoop,
)
from sessiondb.migrations import apply_migrations, migration_status, rollback_migrations
from sessiondb.model import Session, metadata, sessions
from sessiondb.purge import purge_sessions
from sessiondb.queries import count_sessions, create_session, delete_session, get_session
from sessiondb.settings import PoolSettings

__all__ = [
    "ConcurrentSessionUse",
    "ConfigurationError",
    "ConnectionLost",
    "Database",
    "DatabaseUnavailable",
    "EmbeddedServerError",
    "ImmutableSessionError",
    "InvalidSessionId",
    "MigrationError",
    "NaiveDatetimeError",
    "NotADatetimeError",
    "PoolSettings",
    "PoolTimeout",
    "QueryTimeout",
    "Session",
    "SessionDBError",
    "WrongEventLoop",
    "apply_migrations",
    "count_sessions",
    "create_session",
    "delete_session",
    "get_session",
    "metadata",
    "migration_status",
    "purge_sessions",
    "rollback_migrations",
    "sessions",
]
