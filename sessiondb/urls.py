"""Database URL handling: one accepted set of schemes, one place that knows the driver names."""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from sessiondb.errors import ConfigurationError

# postgresql+psycopg:// too: the URL a DBA gives `yoyo apply` names the same server (sessiondb picks the driver).
ACCEPTED_SCHEMES = ("postgresql", "postgres", "postgresql+asyncpg", "postgresql+psycopg")
ASYNC_DRIVER = "postgresql+asyncpg"
# yoyo (and so a DBA's `yoyo apply`) uses psycopg 3.
MIGRATION_DRIVER = "postgresql+psycopg"


def parse_database_url(url: str | URL) -> URL:
    """Return ``url`` as a SQLAlchemy URL on the asyncpg driver, or raise ``ConfigurationError``.

    The error text never contains the password.
    """
    if isinstance(url, URL):
        parsed = url
    else:
        if not isinstance(url, str):
            raise ConfigurationError(f"database URL must be a string, got {type(url).__name__}")
        if not url.strip():
            raise ConfigurationError("database URL is empty")
        if "\x00" in url:
            raise ConfigurationError("database URL contains a NUL byte")
        if url.count("@") > 1:
            # An unescaped "@" inside the password or user name: the parsers disagree on where the host
            # starts (SQLAlchemy at the first "@", libpq at the last), and the part taken as host or
            # database would be printed in error messages. Not echoed here.
            raise ConfigurationError(
                "database URL has more than one '@': write an '@' inside a password or user name as %40"
            )
        try:
            parsed = make_url(url.strip())
        except (ArgumentError, ValueError):
            raise ConfigurationError(
                "database URL is not a valid URL (expected postgresql://user:password@host:port/dbname)"
            ) from None
    if parsed.drivername not in ACCEPTED_SCHEMES:
        raise ConfigurationError(
            f"unsupported database URL scheme {parsed.drivername!r}; "
            f"use one of: {', '.join(s + '://' for s in ACCEPTED_SCHEMES)}"
        )
    try:
        port = parsed.port
    except ValueError:
        raise ConfigurationError("database URL has an invalid port") from None
    if port is not None and not 1 <= port <= 65535:
        raise ConfigurationError(f"database URL has an invalid port {port} (expected 1-65535)")
    return parsed.set(drivername=ASYNC_DRIVER)


def migration_url(url: str | URL) -> str:
    """The same server as a ``postgresql+psycopg://`` URL string for yoyo."""
    return parse_database_url(url).set(drivername=MIGRATION_DRIVER).render_as_string(hide_password=False)


def asyncpg_dsn(url: str | URL) -> str:
    """The same server as a plain ``postgresql://`` DSN for ``asyncpg.connect``/``create_pool``."""
    return parse_database_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def describe_server(url: str | URL) -> str:
    """``host:port/dbname``, or ``socket-dir/.s.PGSQL.port/dbname`` for a Unix socket; never the password."""
    parsed = parse_database_url(url)
    host = parsed.host or parsed.query.get("host") or "localhost"
    if isinstance(host, tuple):
        host = ",".join(host)
    port = parsed.port or parsed.query.get("port") or 5432
    if isinstance(port, tuple):
        port = ",".join(port)
    if host.startswith("/"):
        # A socket directory: name the socket file itself, so the port is not read as TCP.
        return f"{host.rstrip('/')}/.s.PGSQL.{port}/{parsed.database or ''}"
    return f"{host}:{port}/{parsed.database or ''}"
