"""``db.fast``: one committed statement per call on a pooled connection, for services that need no ORM.

Each method checks a connection out of the *same* SQLAlchemy pool as ``db.session()`` (so
``db.pool_stats()`` counts it and pool limits apply), runs one prepared statement on the asyncpg
driver connection, and returns it to the pool. The statement is committed before the method
returns: outside PgBouncer it runs in autocommit (one round trip); with
``PoolSettings(pgbouncer=True)`` it runs inside ``BEGIN``/``COMMIT`` so that asyncpg's unnamed
prepare and execute reach the same server connection (no named prepared statements are used
there, because ``statement_cache_size`` is 0).

Liveness is checked at checkout without a round trip (``sessiondb.liveness``); a pooled connection
whose backend died in the instant before is found by the statement itself, which then runs once more
on a new connection when it cannot have run on the dead one (see ``_NOT_RUN``).

Errors: ``InvalidSessionId`` before any SQL; ``PoolTimeout``, ``DatabaseUnavailable``,
``WrongEventLoop`` as for ``db.session()``; ``ConnectionLost`` if the connection breaks during the
statement (a write's outcome is then unknown) and ``QueryTimeout`` past ``command_timeout``, both
discarding the connection; a statement the server refuses raises asyncpg's own exception (e.g.
``asyncpg.UndefinedTableError`` before migrations), and the connection goes back to the pool.

Use ``db.session()`` and the ORM functions instead when several statements must be atomic.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.util import await_only, greenlet_spawn

from sessiondb.errors import ConnectionLost, PoolTimeout, QueryTimeout
from sessiondb.liveness import check_locally_on_checkout
from sessiondb.values import normalize_uuid, parse_session_id

if TYPE_CHECKING:
    from sessiondb.database import Database

_INSERT = "INSERT INTO sessions DEFAULT VALUES RETURNING id, created_at"
_SELECT = "SELECT id, created_at FROM sessions WHERE id = $1"
_DELETE = "DELETE FROM sessions WHERE id = $1 RETURNING id"


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A session row as plain values: ``id`` a plain ``uuid.UUID``, ``created_at`` aware UTC."""

    id: uuid.UUID
    created_at: datetime

    def to_dict(self) -> dict[str, str]:
        """``{"id": "<lowercase uuid>", "created_at": "<ISO 8601, +00:00>"}``, like ``Session.to_dict()``."""
        return {"id": str(self.id), "created_at": self.created_at.isoformat()}


def _record(row: asyncpg.Record) -> SessionRecord:
    created_at: datetime = row[1]
    # asyncpg returns aware datetimes for timestamptz; a naive one could only be UTC on the wire.
    utc = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at.astimezone(UTC)
    return SessionRecord(normalize_uuid(row[0]), utc)


# The connection itself failed (rather than the server refusing the statement): it is discarded.
_LOST = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.AdminShutdownError)

# A pooled connection's backend found dead by the first statement after checkout: asyncpg had not read the
# server's goodbye yet, so the local check at checkout passed. Retrying on a new connection is what a failed
# pre-ping does. A read retries on any such failure; a write only when its statement cannot have run:
# - asyncpg refused to send it: InterfaceError "connection is closed", or InternalClientError "cannot switch
#   to state ..." from its protocol state check, before anything is written;
# - the server said it terminated the backend (57P01 "terminating connection due to administrator
#   command"): a backend terminated while idle sends that as it exits, before reading another message
#   (terminated mid-statement, it rolls the statement back; only between its commit and its reply could a
#   retried create leave one extra, unused row, which retention purges);
# - the socket was already closed by the other end when the statement was written (EPIPE) or was closed
#   with the statement unread (ECONNRESET).
# Either of the last two may also be the reason asyncpg gives for "connection was closed in the middle of
# operation". A connection closed after the statement was read may come after a write committed: that
# stays ConnectionLost, outcome unknown.
_NOT_RUN = (
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.AdminShutdownError,
    BrokenPipeError,
    ConnectionResetError,
)


def _statement_did_not_run(error: BaseException) -> bool:
    if isinstance(error, asyncpg.ConnectionDoesNotExistError):
        return isinstance(error.__cause__, _NOT_RUN)
    return isinstance(error, _NOT_RUN)


class _DeadBeforeStatement(Exception):
    """A reused connection was found dead by its first statement, which did not run: retry on a new one."""


class FastSessions:
    """The fast path: ``await db.fast.create_session()`` and friends. Obtain it as ``db.fast``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._in_transaction = db.pool_settings.pgbouncer

    async def create_session(self) -> SessionRecord:
        """Insert a session and return it, committed."""
        row = await self._fetchrow(_INSERT)
        assert row is not None  # INSERT ... RETURNING always yields the row
        return _record(row)

    async def get_session(self, session_id: uuid.UUID | str) -> SessionRecord | None:
        """The committed session with this id, or ``None``. ``InvalidSessionId`` before any SQL."""
        row = await self._fetchrow(_SELECT, parse_session_id(session_id))
        return None if row is None else _record(row)

    async def delete_session(self, session_id: uuid.UUID | str) -> bool:
        """Delete and commit; ``True`` if it existed, ``False`` if not. ``InvalidSessionId`` before any SQL."""
        return await self._fetchrow(_DELETE, parse_session_id(session_id)) is not None

    async def _fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        self._db._bind_to_running_loop()  # WrongEventLoop, as db.session() raises
        # One greenlet hop for checkout + statement + return, instead of one per step.
        result: asyncpg.Record | None = await greenlet_spawn(self._checkout_and_run, sql, args)
        return result

    def _checkout_and_run(self, sql: str, args: tuple[Any, ...]) -> asyncpg.Record | None:
        try:
            return self._run_once(sql, args, may_retry=True)
        except _DeadBeforeStatement:
            # The backend of a pooled connection died before the statement reached it (terminated, server
            # restarted) and the local check at checkout could not know yet. As a failed pre-ping would,
            # the pool discards every connection made before now and this runs once more on a new one.
            return self._run_once(sql, args, may_retry=False)

    def _run_once(self, sql: str, args: tuple[Any, ...], *, may_retry: bool) -> asyncpg.Record | None:
        db = self._db
        counters = db._counters
        counters.requests_waiting += 1
        started = time.perf_counter()
        opened_before = counters.connections_opened
        try:
            with check_locally_on_checkout():  # the statement follows at once: no ping round trip
                fairy = db.engine.sync_engine.raw_connection()
        except sa_exc.TimeoutError:
            raise PoolTimeout(db._pool_timeout_message()) from None
        except db.connect_errors as error:
            raise db.unavailable(error) from error
        finally:
            counters.requests_waiting -= 1
            counters.wait_ms_total += (time.perf_counter() - started) * 1000.0
        reused = counters.connections_opened == opened_before
        driver: asyncpg.Connection = fairy.driver_connection  # type: ignore[assignment]
        try:
            statement = (
                self._in_explicit_transaction(driver, sql, args)
                if self._in_transaction
                else driver.fetchrow(sql, *args)
            )
            row: asyncpg.Record | None = await_only(statement)
        except TimeoutError as error:
            # command_timeout: asyncpg abandoned the statement, so the connection's state is unknown.
            fairy.invalidate(error)
            fairy.close()
            raise QueryTimeout(
                f"statement to PostgreSQL at {db.server} exceeded PoolSettings.command_timeout; "
                "the connection was discarded"
            ) from error
        except Exception as error:
            if isinstance(error, _LOST) or driver.is_closed():
                if may_retry and reused and (sql == _SELECT or _statement_did_not_run(error)):
                    db.engine.sync_engine.pool._invalidate(fairy, error)  # and all older connections
                    fairy.close()
                    raise _DeadBeforeStatement from error
                fairy.invalidate(error)
                fairy.close()
                raise ConnectionLost(
                    f"lost the connection to PostgreSQL at {db.server} during a db.fast statement (whether "
                    f"a write was applied is unknown; the connection was discarded): {error}"
                ) from error
            # The server refused the statement; the connection is fine (no transaction left open).
            fairy.close()
            raise
        except BaseException:
            # Cancelled mid-statement: the connection's protocol state is unknown, so never reuse it.
            fairy.invalidate()
            fairy.close()
            raise
        fairy.close()
        return row

    @staticmethod
    async def _in_explicit_transaction(
        driver: asyncpg.Connection, sql: str, args: tuple[Any, ...]
    ) -> asyncpg.Record | None:
        async with driver.transaction():
            return await driver.fetchrow(sql, *args)
