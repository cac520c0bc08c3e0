"""Every error sessiondb raises on purpose. Callers catch these, not driver exceptions."""

from __future__ import annotations


class SessionDBError(Exception):
    """Base class of all sessiondb errors."""


class InvalidSessionId(SessionDBError, ValueError):
    """A session id that is neither a ``uuid.UUID`` nor a canonical 8-4-4-4-12 hex string."""


class ImmutableSessionError(SessionDBError, AttributeError):
    """An attempt to change a session row that was already loaded or persisted."""


class ConfigurationError(SessionDBError, ValueError):
    """A setting or URL that cannot work; raised before any connection is attempted."""


class DatabaseUnavailable(SessionDBError, ConnectionError):
    """The server could not be reached or refused the connection. Never carries the password."""


class PoolTimeout(SessionDBError, TimeoutError):
    """No pooled connection became free within ``PoolSettings.timeout`` seconds."""


class MigrationError(SessionDBError):
    """A migration failed, or the migration lock could not be taken."""


class EmbeddedServerError(SessionDBError):
    """The embedded throwaway PostgreSQL could not be started."""
