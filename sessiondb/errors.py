"""Every error sessiondb raises on purpose. Callers catch these, not driver exceptions."""

from __future__ import annotations


class SessionDBError(Exception):
    """Base class of all sessiondb errors."""


class InvalidSessionId(SessionDBError, ValueError):
    """A session id that is neither a ``uuid.UUID`` nor a canonical 8-4-4-4-12 hex string."""


class NaiveDatetimeError(SessionDBError, ValueError):
    """A datetime without a time zone where an instant is needed (read in the server's TimeZone, it
    would be silently shifted)."""


class NotADatetimeError(SessionDBError, TypeError):
    """Something other than a ``datetime`` where a datetime is needed."""


class ImmutableSessionError(SessionDBError, AttributeError):
    """An attempt to change a session row that was already loaded or persisted."""


class ConfigurationError(SessionDBError, ValueError):
    """A setting or URL that cannot work; raised before any connection is attempted."""


class DatabaseUnavailable(SessionDBError, ConnectionError):
    """The server could not be reached or refused the connection. Never carries the password."""


class ConnectionLost(DatabaseUnavailable):
    """The connection broke while a ``db.session()`` block was using it (server restart, killed
    backend, ``idle_in_transaction_session_timeout``, network). The transaction did not commit
    unless the message says the loss happened during COMMIT, in which case its outcome is unknown.
    The connection was discarded, never returned to the pool."""


class PoolTimeout(SessionDBError, TimeoutError):
    """No pooled connection became free within ``PoolSettings.timeout`` seconds."""


class QueryTimeout(SessionDBError, TimeoutError):
    """A statement ran past ``statement_timeout`` (server) or ``PoolSettings.command_timeout``
    (client). The transaction was rolled back; nothing it wrote was committed."""


class ConcurrentSessionUse(SessionDBError, RuntimeError):
    """Two tasks used one ``AsyncSession`` at the same time. Give each task its own ``db.session()``."""


class WrongEventLoop(SessionDBError, RuntimeError):
    """A ``Database`` was used from an event loop other than the one whose connections it pools."""


class MigrationError(SessionDBError):
    """A migration failed, or the migration lock could not be taken."""


class EmbeddedServerError(SessionDBError):
    """The embedded throwaway PostgreSQL could not be started."""
