"""The unit of work behind ``db.session()``: one pooled connection, one transaction, and the
``AsyncSession`` on it.

A plain ``AsyncSession`` checks its connection out, begins, commits and returns it through
SQLAlchemy's session, session-transaction, connection and pool layers, a greenlet hop for each
step: on a one-statement unit of work that costs more client CPU than the round trips themselves
(benchmarks/README.md). Here ``db.session()`` checks the connection out once (its ``BEGIN``
doubles as the pre-ping, see ``sessiondb.liveness``), the session functions send their statements
and the final ``COMMIT`` straight to asyncpg, and SQLAlchemy's ``Connection`` is only built when the
block uses the ORM. Both kinds of statement share the one transaction:

- ``UnitSession.get_bind()`` gives the ORM a ``Connection`` on the unit's pooled connection, so ORM
  statements run in the transaction already open on it (SQLAlchemy's asyncpg adapter begins
  lazily and finds it open), and the ORM's commit or rollback ends it;
- once the ORM side is built, it owns the transaction: if the session functions already sent
  statements in it, the ``Session`` begins bound to the connection (as a plain ``AsyncSession``
  would have autobegun on them), and from then on the session functions go through
  ``AsyncSession.connection()`` like any ORM statement, so ``begin()``, ``begin_nested()`` and
  their rollbacks cover them exactly as they cover the ORM's own statements;
- ``UnitAsyncSession.commit()``, ``rollback()`` and ``close()`` end the ORM's part and then whatever
  the session functions began on the driver, so ``await s.commit()`` inside the block commits both.

A unit whose connection is lost stays lost: later statements in the block fail (``ConnectionLost``
from the session functions, SQLAlchemy's own error from the ORM) instead of quietly continuing on
a new connection without the work done before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.pool import PoolProxiedConnection, QueuePool

from sessiondb.driver import as_sqlalchemy_error
from sessiondb.errors import ConnectionLost
from sessiondb.guard import GuardedAsyncSession


class UnitOfWork:
    """The pooled connection one ``db.session()`` block holds, from checkout to its return."""

    __slots__ = (
        "_adapter",
        "_connection",
        "_driver",
        "_fairy",
        "engine",
        "has_work",
        "rows",
        "server",
        "uncommitted",
    )

    def __init__(self, engine: Engine, fairy: PoolProxiedConnection, server: str) -> None:
        self.engine = engine
        self.server = server
        self._fairy = fairy
        # SQLAlchemy's asyncpg adapter (its _transaction is the open asyncpg transaction, if any) and the
        # asyncpg connection: fixed for the unit's life, since nothing may revalidate it (see connection()).
        self._adapter: Any = fairy.dbapi_connection
        self._driver: asyncpg.Connection = fairy.driver_connection  # type: ignore[assignment]
        self._connection: Connection | None = None
        # Rows the session functions loaded or created, by identity key (in the ORM session's identity
        # map too, once that is built), and those of them from the current transaction, which leave
        # the session again if it rolls back.
        self.rows: dict[Any, object] = {}
        self.uncommitted: list[object] = []
        # Whether the session functions sent a statement in the driver transaction now open: then the
        # ORM, once built, must own that transaction rather than start its own.
        self.has_work = False

    def connection(self) -> Connection:
        """SQLAlchemy's ``Connection`` on this unit's pooled connection, made when the ORM first needs it."""
        if not self.usable:
            raise self.lost()
        if self._connection is None:
            # No revalidation: after a loss the ORM must not carry on with a fresh connection either.
            self._connection = Connection(self.engine, connection=self._fairy, _allow_revalidate=False)
        return self._connection

    def orm_transaction_ended(self) -> None:
        """Execution options (isolation level, read-only, AUTOCOMMIT) are for one ORM transaction: a plain
        ``AsyncSession`` returns its connection when that ends and gets a default one for the next. The
        unit keeps its pooled connection, so it resets them as the pool's checkin would, and retires the
        ``Connection`` that carried them."""
        connection = self._connection
        if connection is None or connection._execution_options is self.engine._execution_options:
            return
        if connection.in_transaction() or not self.usable:
            return
        self._reset_characteristics()  # no IO: the transaction has ended, so nothing is rolled back
        # Closed, as a plain AsyncSession's would be once returned: a caller still holding it gets "This
        # Connection is closed" rather than statements outside the ORM's transaction. Not close(): that
        # would return the pooled connection this unit still holds.
        connection._dbapi_connection = None
        self._connection = None

    def _reset_characteristics(self) -> None:
        record: Any = self._fairy._connection_record
        while record.finalize_callback:
            record.finalize_callback.pop()(self._fairy.dbapi_connection)

    @property
    def usable(self) -> bool:
        """Neither invalidated nor returned: statements may still be sent on it."""
        # The pool clears the proxy's connection when it is invalidated (also through the ORM's
        # Connection, which shares the proxy) or returned.
        return self._fairy.dbapi_connection is not None

    def driver_transaction_open(self) -> bool:
        return self._fairy.dbapi_connection is not None and self._adapter._transaction is not None

    def orm_connected(self) -> bool:
        """Whether the ORM's ``Connection`` is in a transaction (so the ORM ends it)."""
        return self._connection is not None and self._connection.in_transaction()

    async def begin_afresh_if_unused(self) -> None:
        """Roll back the ``BEGIN`` sent at checkout if nothing ran in it yet.

        Isolation level, read-only and deferrable are fixed when a transaction begins; asked for
        through ``AsyncSession.connection(execution_options=...)``, they must apply to the block's
        first transaction as they would on a plain ``AsyncSession``, which begins only then.
        """
        if not self.has_work and not self.orm_connected() and self.driver_transaction_open():
            await self.end_driver_transaction(commit=False)

    def invalidate(self, error: BaseException | None = None) -> None:
        """Discard the connection: the pool closes it and never hands it out again. No IO is awaited."""
        connection = self._connection
        if connection is not None:
            if not connection.closed and not connection.invalidated:
                connection.invalidate(error)
        elif self._fairy.dbapi_connection is not None:
            self._fairy.invalidate(error)

    async def fetchrow(self, statement: str, args: tuple[Any, ...]) -> asyncpg.Record | None:
        """Run one prepared statement in the unit's transaction (``BEGIN`` first if a commit ended the last)."""
        if self._fairy.dbapi_connection is None:
            raise self.lost()
        adapter = self._adapter
        sent = "BEGIN"
        # Inline rather than through driver.run_on_driver: this is every statement's path.
        try:
            if adapter._transaction is None:
                await adapter._start_transaction()
            sent = statement
            self.has_work = True
            row: asyncpg.Record | None = await self._driver.fetchrow(statement, *args)
            return row
        except Exception as error:
            raise as_sqlalchemy_error(error, adapter, self.engine.dialect, self.invalidate, sent, args) from error
        except BaseException:
            self.invalidate()  # interrupted mid-statement (cancelled): its state on the connection is unknown
            raise

    async def end_driver_transaction(self, *, commit: bool) -> None:
        """``COMMIT`` or ``ROLLBACK`` what the session functions began, unless the ORM owns that transaction."""
        adapter = self._adapter
        transaction = adapter._transaction
        if transaction is None or self._fairy.dbapi_connection is None:
            self.has_work = False
            return
        if self.orm_connected():
            return  # begun through the ORM's Connection: the ORM's commit or rollback ends it
        self.has_work = False
        try:
            await adapter._call_and_discard(transaction.commit if commit else transaction.rollback)
        except Exception as error:
            sent = "COMMIT" if commit else "ROLLBACK"
            raise as_sqlalchemy_error(error, adapter, self.engine.dialect, self.invalidate, sent, ()) from error
        except BaseException:
            self.invalidate()
            raise

    def returns_without_io(self) -> bool:
        """Whether ``release()`` can run outside a greenlet: the pool keeps the connection rather than
        closing it (an overflow connection with the pool full, or ``NullPool``, is closed: that is IO)."""
        pool = self.engine.pool
        return self._fairy.dbapi_connection is None or (
            isinstance(pool, QueuePool) and pool.checkedin() < pool.size()
        )

    def release(self) -> None:
        """Return the connection to the pool. Once its transaction has ended this does no IO, unless the
        pool closes the connection (see ``returns_without_io``): then call it inside ``greenlet_spawn``."""
        if self.driver_transaction_open():
            # Its transaction could not be ended (a failed rollback): never hand that state on.
            self.invalidate()
        if self._connection is not None:
            self._connection.close()
        elif self._fairy.dbapi_connection is not None:
            self._fairy.close()

    def lost(self) -> ConnectionLost:
        """The error for any statement or commit after this unit's connection was lost."""
        return ConnectionLost(
            f"the connection to PostgreSQL at {self.server} was lost earlier in this db.session() block "
            "(the transaction was not committed and the connection was discarded); "
            "open a new db.session() to go on"
        )


def _make_persistent(session: OrmSession, row: object) -> None:
    """Put a loaded row (identity key set, values in its dict) into ``session``'s identity map, as
    SQLAlchemy's loader does for a query result: no ORM transaction, no lifecycle events."""
    state = instance_state(row)
    assert state.key is not None
    state.session_id = session.hash_key
    session.identity_map._add_unpresent(state, state.key)


class UnitSession(OrmSession):
    """The ORM session of a unit of work: every statement goes to the unit's connection."""

    unit: UnitOfWork | None = None

    def get_bind(self, mapper: Any = None, *, clause: Any = None, bind: Any = None, **kw: Any) -> Any:
        if self.unit is not None and bind is None:
            return self.unit.connection()
        return super().get_bind(mapper, clause=clause, bind=bind, **kw)


@event.listens_for(UnitSession, "after_transaction_end")
def _after_transaction_end(session: UnitSession, transaction: SessionTransaction) -> None:
    if transaction.parent is None and session.unit is not None:  # the outermost: the ORM's transaction ended
        session.unit.orm_transaction_ended()


class UnitAsyncSession(GuardedAsyncSession):
    """The ``AsyncSession`` that ``db.session()`` yields. Without a unit it is a plain guarded session.

    Its SQLAlchemy ``Session`` is built on first use of ``sync_session``: a block that only deletes
    or reads through the session functions never needs it, and building it costs as much as the rest
    of such a block. ``orm_session`` is that ``Session`` if built, else ``None``.
    """

    sync_session_class = UnitSession
    unit: UnitOfWork | None = None

    def __init__(
        self, bind: Any = None, *, binds: Any = None, sync_session_class: Any = None, **kw: Any
    ) -> None:
        self._async_bind = bind
        self._async_binds = dict(binds) if binds else {}
        self._deferred_init: tuple[Any, ...] | None = (bind, binds, sync_session_class, kw)
        self.orm_session: UnitSession | None = None

    # AsyncSession reaches its Session through these two names; both build it on first access.
    @property  # type: ignore[override]
    def sync_session(self) -> UnitSession:
        return self.orm_session if self.orm_session is not None else self._build()

    @sync_session.setter
    def sync_session(self, session: UnitSession) -> None:
        self.orm_session = session

    @property  # type: ignore[override]
    def _proxied(self) -> UnitSession:
        return self.orm_session if self.orm_session is not None else self._build()

    @_proxied.setter
    def _proxied(self, session: UnitSession) -> None:
        self.orm_session = session

    def _build(self) -> UnitSession:
        deferred, self._deferred_init = self._deferred_init, None
        assert deferred is not None
        bind, binds, sync_session_class, kw = deferred
        AsyncSession.__init__(self, bind, binds=binds, sync_session_class=sync_session_class, **kw)
        built = self.orm_session
        assert built is not None
        unit = built.unit = self.unit
        if unit is not None:
            for row in unit.rows.values():  # the session functions' rows join it as persistent objects
                _make_persistent(built, row)
            if unit.has_work and unit.usable and not unit.orm_connected():
                # Their statements are in the open transaction: the ORM takes it over, bound to the
                # connection (no IO: the adapter's BEGIN is lazy and already sent), as a plain
                # AsyncSession would have autobegun on them. So begin() refuses, as it would there, and
                # the ORM's commit, rollback and savepoints cover that work.
                built.connection()
        return built

    def keep_row(self, row: object) -> None:
        """A row the session functions loaded or created (persistent, with its identity key set)."""
        unit = self.unit
        assert unit is not None
        unit.rows[instance_state(row).key] = row
        unit.uncommitted.append(row)
        if self.orm_session is not None:
            _make_persistent(self.orm_session, row)

    def kept_row(self, key: Any) -> object | None:
        """The object this session holds for identity ``key`` (loaded by the ORM or kept), if any."""
        if self.orm_session is not None:
            return self.orm_session.identity_map.get(key) if self.orm_session.identity_map else None
        return self.unit.rows.get(key) if self.unit is not None else None

    def forget_row(self, row: object) -> None:
        """``row`` leaves the session: its database row is gone (deleted, or its INSERT rolled back)."""
        if self.unit is not None:
            self.unit.rows.pop(instance_state(row).key, None)
        if self.orm_session is not None and row in self.orm_session:
            self.orm_session.expunge(row)

    def _orm_in_transaction(self) -> bool:
        built = self.orm_session
        return built is not None and built.in_transaction()

    async def connection(
        self, bind_arguments: Any = None, execution_options: Any = None, **kw: Any
    ) -> AsyncConnection:
        unit = self.unit
        if execution_options and unit is not None:
            self._claim("connection")
            try:
                await unit.begin_afresh_if_unused()  # so isolation level or read-only apply, see there
            finally:
                self._release()
        return await super().connection(bind_arguments=bind_arguments, execution_options=execution_options, **kw)

    def attach_unit(self, unit: UnitOfWork) -> None:
        self.unit = unit
        built = self.orm_session
        if built is not None:
            built.unit = unit

    def in_transaction(self) -> bool:
        """True while a transaction is open: the ORM's, or the one ``db.session()`` began at checkout."""
        return self._orm_in_transaction() or (self.unit is not None and self.unit.driver_transaction_open())

    async def commit(self) -> None:
        """Commit the ORM's work (flushing first, as usual) and the session functions' statements."""
        unit = self.unit
        if unit is None:
            return await super().commit()
        if not unit.usable:
            raise unit.lost()  # nothing of the block's can commit any more
        self._claim("commit")
        try:
            if self._orm_in_transaction():  # the ORM's part; skipped (no greenlet hop) when it has none
                await super().commit()
            await unit.end_driver_transaction(commit=True)
            unit.uncommitted.clear()
        finally:
            self._release()

    async def rollback(self) -> None:
        unit = self.unit
        if unit is None:
            return await super().rollback()
        self._claim("rollback")
        try:
            # Rows the session functions loaded or created in this transaction leave the session, as
            # the ORM's rollback would make objects inserted in it transient again.
            for row in unit.uncommitted:
                self.forget_row(row)
            unit.uncommitted.clear()
            try:
                if self._orm_in_transaction():
                    await super().rollback()
            finally:
                await unit.end_driver_transaction(commit=False)
        finally:
            self._release()

    async def close(self) -> None:
        """As ``AsyncSession.close()``: roll back and let go of every object. The unit keeps its connection."""
        await self._end_everything("close", super().close)

    async def reset(self) -> None:
        await self._end_everything("reset", super().reset)

    async def _end_everything(self, operation: str, orm_end: Callable[[], Awaitable[None]]) -> None:
        unit = self.unit
        if unit is None:
            return await orm_end()
        self._claim(operation)
        try:
            unit.rows.clear()  # every object leaves the session
            unit.uncommitted.clear()
            try:
                if self.orm_session is not None:
                    await orm_end()
            finally:
                await unit.end_driver_transaction(commit=False)
        finally:
            self._release()

    async def invalidate(self) -> None:
        if self.orm_session is not None:
            # First: the ORM invalidates the Connection its transaction holds (the unit's, if bound),
            # and would fail on one already invalidated under it.
            await super().invalidate()
        if self.unit is not None:
            self.unit.invalidate()  # if the ORM did not hold it

    def release_unit_if_no_io(self) -> bool:
        """``release_unit()`` now if that needs no IO and no other task is using the session; else False."""
        unit = self.unit
        if unit is None:
            return True
        if self.in_use_elsewhere() or not unit.returns_without_io():
            return False
        self.release_unit()
        return True

    def release_unit(self) -> None:
        """End of the block: let go of every object and return the connection; no IO if
        ``unit.returns_without_io()``, else call it inside ``greenlet_spawn``."""
        unit = self.unit
        if unit is None:
            return
        if unit.driver_transaction_open():
            unit.invalidate()  # not ended (a failed rollback): the ORM's close below must not send ROLLBACK
        sync_session = self.orm_session
        if sync_session is None:
            unit.release()
            self.unit = None
            return
        identity_map = sync_session.identity_map
        if identity_map or sync_session.in_transaction():
            states = identity_map.all_states()
            ours = {instance_state(row) for row in unit.rows.values()}
            if sync_session.in_transaction() or not all(state in ours for state in states):
                sync_session.close()  # the ORM was used: let it close as usual
            else:
                # Only the session functions' rows: detach them as close() would, minus the lifecycle
                # events they never had (they were loaded without them too). close() costs more than the
                # rest of a one-statement unit of work, mostly in making this session's event dispatchers.
                for state in states:
                    state._detach()
                identity_map._kill()
                sync_session.identity_map = type(identity_map)()
        self.unit = sync_session.unit = None
        unit.release()
