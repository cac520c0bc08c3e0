"""The session operations. Each runs inside the caller's ``AsyncSession`` transaction.

They send prepared statements straight to the asyncpg connection the session holds, inside the
session's own transaction, instead of going through the ORM's statement execution: that path
costs several times more client CPU than the round trip itself (see ``benchmarks/README.md``).
The transaction is opened explicitly first (SQLAlchemy begins it lazily, on its own first
execute), so the statements commit or roll back with the ``db.session()`` block. Rows come back as
``Session`` instances in the session's identity map, exactly as an ORM query would leave them.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import func, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import configure_mappers, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state, set_committed_value

from sessiondb.driver import run_on_driver
from sessiondb.guard import GuardedAsyncSession
from sessiondb.model import Session
from sessiondb.unit import UnitAsyncSession
from sessiondb.values import normalize_uuid, parse_session_id

_INSERT = "INSERT INTO sessions DEFAULT VALUES RETURNING id, created_at"
_SELECT = "SELECT id, created_at FROM sessions WHERE id = $1"
_DELETE = "DELETE FROM sessions WHERE id = $1 RETURNING id"
_COUNT = select(func.count()).select_from(Session)
_MAPPER = inspect(Session)


def _require_async_session(s: object) -> AsyncSession:
    if not isinstance(s, AsyncSession):
        raise TypeError(f"expected a sqlalchemy AsyncSession (from db.session()), got {type(s).__name__}")
    return s


async def _fetchrow(s: AsyncSession, operation: str, sql: str, *args: Any) -> asyncpg.Record | None:
    """Run one statement on the session's driver connection, inside the session's transaction."""
    if not isinstance(s, GuardedAsyncSession):
        return await _fetchrow_through_session(s, sql, args)
    # The statement bypasses AsyncSession's own methods, so claim the session for this task the
    # same way they do (db.session() hands out a guarded session): overlap is ConcurrentSessionUse.
    s._claim(operation)
    try:
        if isinstance(s, UnitAsyncSession) and s.unit is not None:
            # After a failed flush the ORM's transaction needs a rollback first; the session path then
            # raises SQLAlchemy's own error for that.
            orm_session = s.orm_session
            transaction = None if orm_session is None else orm_session.get_transaction()
            if transaction is None or transaction.is_active:
                return await s.unit.fetchrow(sql, args)
        return await _fetchrow_through_session(s, sql, args)
    finally:
        s._release()


async def _fetchrow_through_session(s: AsyncSession, sql: str, args: tuple[Any, ...]) -> asyncpg.Record | None:
    """For any other ``AsyncSession``: its connection, with SQLAlchemy's lazily begun transaction opened first."""
    async_connection = await s.connection()
    pooled = await async_connection.get_raw_connection()
    connection = async_connection.sync_connection
    assert connection is not None
    adapter: Any = pooled.dbapi_connection
    driver: asyncpg.Connection = pooled.driver_connection  # type: ignore[assignment]

    async def statement() -> asyncpg.Record | None:
        if adapter._transaction is None:
            # SQLAlchemy has not sent BEGIN yet (it would on its first execute): send it now,
            # through the adapter, so the session's commit and rollback end this transaction.
            await adapter._start_transaction()
        row: asyncpg.Record | None = await driver.fetchrow(sql, *args)
        return row

    return await run_on_driver(
        statement(),
        adapter=adapter,
        dialect=connection.dialect,
        invalidate=connection.invalidate,
        statement=sql,
        args=args,
    )


def _attach(s: AsyncSession, session_id: uuid.UUID, created_at: datetime) -> Session:
    """A persistent ``Session`` for a row this transaction has seen, in ``s``'s identity map."""
    sid = normalize_uuid(session_id)
    # asyncpg returns aware datetimes for timestamptz; a naive one could only be UTC on the wire.
    utc = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at.astimezone(UTC)
    unit = s.unit if isinstance(s, UnitAsyncSession) else None
    if unit is not None:
        row = _load_into_identity_map(s, sid, utc)
        unit.rows.append(row)  # expunged again if this transaction rolls back
        return row
    row = Session()
    # Loaded values, as the ORM's own loading sets them: no change history, no per-attribute events
    # (Session.__setattr__'s validation is for callers' values; these come from the database).
    set_committed_value(row, "id", sid)
    set_committed_value(row, "created_at", utc)
    make_transient_to_detached(row)  # gives it its identity key
    s.add(row)  # now persistent: no SQL is sent for it at flush
    return row


def _load_into_identity_map(s: AsyncSession, session_id: uuid.UUID, created_at: datetime) -> Session:
    """Make the row persistent in ``s`` the way SQLAlchemy's loader does for a query result.

    Unlike ``s.add()`` this begins no ORM transaction (``db.session()``'s unit of work has the
    database one), so a block that only uses the session functions never pays for the ORM's
    begin, commit and close, several times the cost of the rest of the unit of work.
    """
    if not _MAPPER.configured:
        configure_mappers()  # as Session() would first: new_instance() alone leaves the attributes unconfigured
    sync_session = s.sync_session
    key = _MAPPER.identity_key_from_primary_key((session_id,))
    row: Session = _MAPPER.class_manager.new_instance()
    state = instance_state(row)
    state.dict["id"] = session_id  # loaded values: no history, no attribute events
    state.dict["created_at"] = created_at
    state.key = key
    state.session_id = sync_session.hash_key
    sync_session.identity_map._add_unpresent(state, key)
    return row


def _in_identity_map(s: AsyncSession, session_id: uuid.UUID) -> Session | None:
    sync_session = s.orm_session if isinstance(s, UnitAsyncSession) else s.sync_session
    if sync_session is None:
        return None  # not built yet (db.session()'s unit of work): nothing is loaded
    identity_map = sync_session.identity_map
    if not identity_map:
        return None  # the common case, without building the key
    found = identity_map.get(_MAPPER.identity_key_from_primary_key((session_id,)))
    return found if isinstance(found, Session) else None


async def create_session(s: AsyncSession) -> Session:
    """Insert a new session; the database assigns ``id`` and ``created_at``.

    One ``INSERT ... DEFAULT VALUES RETURNING`` round trip; the returned object is already in
    ``s``'s identity map, so ``get_session`` in the same transaction sends no SQL.
    """
    row = await _fetchrow(_require_async_session(s), "create_session", _INSERT)
    assert row is not None  # INSERT ... RETURNING always returns the row
    return _attach(s, row[0], row[1])


async def get_session(s: AsyncSession, session_id: uuid.UUID | str) -> Session | None:
    """The session with this id, or ``None``. Raises ``InvalidSessionId`` before any SQL."""
    sid = parse_session_id(session_id)
    if _in_identity_map(_require_async_session(s), sid) is not None:
        # Already loaded (or created) in this session: let the ORM answer without SQL.
        return await s.get(Session, sid)
    row = await _fetchrow(s, "get_session", _SELECT, sid)
    return None if row is None else _attach(s, row[0], row[1])


async def delete_session(s: AsyncSession, session_id: uuid.UUID | str) -> bool:
    """Delete a session; ``True`` if it existed, ``False`` if it did not (deleting twice is fine)."""
    sid = parse_session_id(session_id)
    deleted = await _fetchrow(_require_async_session(s), "delete_session", _DELETE, sid) is not None
    loaded = _in_identity_map(s, sid)
    if loaded is not None:
        # As the ORM's bulk delete would: the object no longer stands for a row in this session.
        s.expunge(loaded)
    return deleted


async def count_sessions(s: AsyncSession) -> int:
    """How many sessions exist, as seen by this transaction."""
    return int((await _require_async_session(s).scalar(_COUNT)) or 0)
