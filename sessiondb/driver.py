"""Statements sent straight to the asyncpg connection under SQLAlchemy, failing as SQLAlchemy would.

The session functions and ``db.session()`` bypass SQLAlchemy's statement execution (see
``sessiondb.unit``). Their failures must still look like SQLAlchemy's own, because that is what
``db.session()`` turns into typed errors (``sessiondb.failures``): the adapter's DBAPI error class
wrapped in ``DBAPIError``, and, when the connection is gone, the connection invalidated and
``connection_invalidated`` set.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect

T = TypeVar("T")


async def run_on_driver(
    operation: Awaitable[T],
    *,
    adapter: Any,
    dialect: Dialect,
    invalidate: Callable[[BaseException | None], None],
    statement: str,
    args: tuple[Any, ...] = (),
) -> T:
    """Await ``operation`` (an asyncpg call on ``adapter``'s connection) with SQLAlchemy's error semantics."""
    try:
        return await operation
    except sa_exc.DBAPIError:
        raise
    except Exception as error:
        raise as_sqlalchemy_error(error, adapter, dialect, invalidate, statement, args) from error
    except BaseException:
        # Interrupted mid-statement (cancelled): what it left on the connection is unknown, so
        # discard the connection, as SQLAlchemy does for its own statements.
        invalidate(None)
        raise


def as_sqlalchemy_error(
    error: Exception,
    adapter: Any,
    dialect: Dialect,
    invalidate: Callable[[BaseException | None], None],
    statement: str,
    args: tuple[Any, ...],
) -> Exception:
    """What SQLAlchemy's own execute would raise for ``error``, invalidating the connection if it is lost."""
    try:
        adapter._handle_exception(error)  # always raises the adapter's DBAPI-style error
    except Exception as raised:
        translated = raised
    else:  # pragma: no cover
        return error
    if not isinstance(translated, adapter.dbapi.Error):
        if isinstance(translated, TimeoutError):
            # command_timeout: asyncpg abandoned the statement, so the connection's state is unknown.
            # (A caller's own asyncio.timeout() arrives here as a cancellation instead.)
            invalidate(translated)
        return translated  # left for db.session() to type as QueryTimeout
    lost = bool(dialect.is_disconnect(translated, adapter, None))
    if lost:
        invalidate(translated)
    wrapped: Exception = sa_exc.DBAPIError.instance(
        statement, args, translated, adapter.dbapi.Error, connection_invalidated=lost, dialect=dialect
    )
    return wrapped
