"""Pool pre-ping in one round trip instead of three.

SQLAlchemy's asyncpg dialect pings with ``BEGIN``, a prepared ``;`` and ``ROLLBACK`` (three round trips) so that its
prepared ``;`` reaches one server connection behind PgBouncer. A simple-protocol ``SELECT 1``
prepares nothing, so one round trip is PgBouncer-safe as well. Every ``db.session()`` and
``db.fast`` checkout pings, so this is the largest fixed cost per unit of work; the pool's
behaviour on a failed ping (invalidate the pool, reconnect once) is SQLAlchemy's, unchanged.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import await_only


def use_single_round_trip_ping(engine: AsyncEngine) -> None:
    """Replace this engine's dialect ping (the dialect instance belongs to this engine alone)."""
    dialect = engine.sync_engine.dialect
    three_round_trips = dialect.do_ping

    def do_ping(dbapi_connection: Any) -> bool:
        driver = getattr(dbapi_connection, "driver_connection", None)
        translate = getattr(dbapi_connection, "_handle_exception", None)
        if driver is None or translate is None or getattr(dbapi_connection, "_transaction", None) is not None:
            # Not the adapter shape this was written against (or mid-transaction): SQLAlchemy's own ping.
            return bool(three_round_trips(dbapi_connection))
        try:
            await_only(driver.execute("SELECT 1"))
        except Exception as error:
            # As SQLAlchemy's ping does: raise the DBAPI error, from which it recognises a disconnect.
            translate(error)
        return True

    dialect.do_ping = do_ping  # type: ignore[method-assign]
