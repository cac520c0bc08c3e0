"""How a pooled connection is proven alive at checkout, in as few round trips as possible.

SQLAlchemy's asyncpg pre-ping is ``BEGIN``, a prepared ``;`` and ``ROLLBACK``: three round trips
on every checkout, the largest fixed cost of a unit of work on this stack. Instead:

- ``db.session()`` checks out inside :func:`begin_on_checkout`: the ``BEGIN`` that the unit of
  work needs anyway is sent at checkout and is the liveness check (0 extra round trips).
- ``db.fast`` checks out inside :func:`check_locally_on_checkout`: asyncpg already knows when the
  server closed the socket or terminated the backend, so that is checked without a round trip;
  the fast path's one statement follows at once.
- Any other checkout (``db.engine`` used directly) pings with a simple-protocol ``SELECT 1``:
  one round trip, and PgBouncer-safe because it prepares nothing.

Installed by ``Database`` when ``PoolSettings.pre_ping`` is on (the default). A failed check
raises SQLAlchemy's ``InvalidatePoolError`` from the pool's ``checkout`` event, the documented hook
for custom disconnect detection: the pool discards every connection made before now and checks
out a fresh one, exactly what SQLAlchemy does after a failed pre-ping.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only

_Mode = Literal["begin", "local"]
_checkout_mode: ContextVar[_Mode | None] = ContextVar("sessiondb_checkout_mode", default=None)


@contextlib.contextmanager
def begin_on_checkout() -> Iterator[None]:
    """Checkouts in this block send ``BEGIN`` at once; it doubles as the liveness check."""
    token = _checkout_mode.set("begin")
    try:
        yield
    finally:
        _checkout_mode.reset(token)


@contextlib.contextmanager
def check_locally_on_checkout() -> Iterator[None]:
    """Checkouts in this block check liveness without a round trip (the caller's statement follows)."""
    token = _checkout_mode.set("local")
    try:
        yield
    finally:
        _checkout_mode.reset(token)


def install_liveness_checks(engine: AsyncEngine) -> None:
    """Wire the checks into this engine (its dialect instance and pool belong to it alone)."""
    dialect = engine.sync_engine.dialect
    sqlalchemy_ping = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        if _checkout_mode.get() is not None:
            return True  # the checkout event below does the check
        driver = getattr(dbapi_connection, "driver_connection", None)
        translate = getattr(dbapi_connection, "_handle_exception", None)
        if driver is None or translate is None or getattr(dbapi_connection, "_transaction", None) is not None:
            # Not the adapter shape this was written against (or mid-transaction): SQLAlchemy's own ping.
            return bool(sqlalchemy_ping(dbapi_connection))
        try:
            await_only(driver.execute("SELECT 1"))
        except Exception as error:
            # As SQLAlchemy's ping does: raise the DBAPI error, from which it recognises a disconnect.
            translate(error)
        return True

    dialect.do_ping = do_ping  # type: ignore[method-assign]
    event.listen(engine.sync_engine.pool, "checkout", _on_checkout)


def _on_checkout(dbapi_connection: Any, connection_record: Any, connection_proxy: Any) -> None:
    mode = _checkout_mode.get()
    if mode is None:
        return
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is None or driver.is_closed():
        raise sa_exc.InvalidatePoolError("the server closed this pooled connection")
    if mode == "begin" and getattr(dbapi_connection, "_transaction", True) is None:
        try:
            # Through the adapter, so SQLAlchemy's commit/rollback end this transaction.
            await_only(dbapi_connection._start_transaction())
        except Exception as error:
            if driver.is_closed():
                raise sa_exc.InvalidatePoolError(f"pooled connection lost: {error}") from error
            raise
