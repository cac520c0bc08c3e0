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
from sessiondb.unit import UnitAsyncSession, UnitOfWork
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
        unit = _unit_only(s)
        if unit is not None:
            return await unit.fetchrow(sql, args)
        # The ORM side is in use: through it, so its transaction, savepoints and a pending rollback
        # after a failed flush govern these statements as they govern its own.
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


def _unit_only(s: AsyncSession) -> UnitOfWork | None:
    """The unit of work of a ``db.session()`` block whose ORM side is not built: it alone runs the statements."""
    return s.unit if isinstance(s, UnitAsyncSession) and s.orm_session is None else None


def _attach(s: AsyncSession, session_id: uuid.UUID, created_at: datetime, *, inserted: bool = False) -> Session:
    """A persistent ``Session`` for a row this transaction has seen, in ``s``."""
    sid = normalize_uuid(session_id)
    # asyncpg returns aware datetimes for timestamptz; a naive one could only be UTC on the wire.
    utc = created_at.replace(tzinfo=UTC) if created_at.tzinfo is None else created_at.astimezone(UTC)
    if _unit_only(s) is not None:
        assert isinstance(s, UnitAsyncSession)
        row = _loaded_row(sid, utc)
        s.keep_row(row)  # in the identity map as soon as the ORM side of s is used; forgotten on rollback
        return row
    row = Session()
    # Loaded values, as the ORM's own loading sets them: no change history, no per-attribute events
    # (Session.__setattr__'s validation is for callers' values; these come from the database).
    set_committed_value(row, "id", sid)
    set_committed_value(row, "created_at", utc)
    make_transient_to_detached(row)  # gives it its identity key
    s.add(row)  # now persistent: no SQL is sent for it at flush
    if inserted:
        # Recorded as inserted by the innermost transaction (savepoint or not), as the ORM's flush records
        # its own INSERTs, so that transaction's rollback takes the row out of the session again.
        sync_session = s.sync_session
        transaction = sync_session.get_nested_transaction() or sync_session.get_transaction()
        if transaction is not None:
            transaction._new[instance_state(row)] = True
    if isinstance(s, UnitAsyncSession) and s.unit is not None:
        s.unit.uncommitted.append(row)  # leaves the session if s.rollback() undoes it, as kept rows do
    return row


def _loaded_row(session_id: uuid.UUID, created_at: datetime) -> Session:
    """A ``Session`` object for a database row, made the way SQLAlchemy's loader makes one: values
    set as loaded (no history, no attribute events), identity key set, not yet in any session.

    Cheaper than ``Session()`` + ``s.add()``, which also begins an ORM transaction: for a block that only
    uses the session functions, the ORM's begin, commit and close cost more than the statement.
    """
    if not _MAPPER.configured:
        configure_mappers()  # as Session() would first: new_instance() alone leaves the attributes unconfigured
    row: Session = _MAPPER.class_manager.new_instance()
    state = instance_state(row)
    state.dict["id"] = session_id
    state.dict["created_at"] = created_at
    state.key = _MAPPER.identity_key_from_primary_key((session_id,))
    return row


def _in_session(s: AsyncSession, session_id: uuid.UUID) -> Session | None:
    """The object ``s`` already holds for this id, if any (no SQL)."""
    if isinstance(s, UnitAsyncSession):
        found = s.kept_row(_MAPPER.identity_key_from_primary_key((session_id,)))
    elif s.sync_session.identity_map:
        found = s.sync_session.identity_map.get(_MAPPER.identity_key_from_primary_key((session_id,)))
    else:
        return None
    return found if isinstance(found, Session) else None


async def create_session(s: AsyncSession) -> Session:
    """Insert a new session; the database assigns ``id`` and ``created_at``.

    One ``INSERT ... DEFAULT VALUES RETURNING`` round trip. The returned object belongs to ``s``
    (``obj in s``; in its identity map from the first use of its ORM side, e.g. ``s.get()`` or
    ``s.execute()``), so ``get_session`` for it in the same session sends no SQL.
    """
    row = await _fetchrow(_require_async_session(s), "create_session", _INSERT)
    assert row is not None  # INSERT ... RETURNING always returns the row
    return _attach(s, row[0], row[1], inserted=True)


async def get_session(s: AsyncSession, session_id: uuid.UUID | str) -> Session | None:
    """The session with this id, or ``None``. Raises ``InvalidSessionId`` before any SQL."""
    sid = parse_session_id(session_id)
    held = _in_session(_require_async_session(s), sid)
    if held is not None:
        if _unit_only(s) is not None:
            return held  # kept by the session functions and still current
        # Loaded (or created) in this session: let the ORM answer, without SQL unless it expired it.
        return await s.get(Session, sid)
    row = await _fetchrow(s, "get_session", _SELECT, sid)
    return None if row is None else _attach(s, row[0], row[1])


async def delete_session(s: AsyncSession, session_id: uuid.UUID | str) -> bool:
    """Delete a session; ``True`` if it existed, ``False`` if it did not (deleting twice is fine)."""
    sid = parse_session_id(session_id)
    deleted = await _fetchrow(_require_async_session(s), "delete_session", _DELETE, sid) is not None
    held = _in_session(s, sid)
    if held is not None:
        # As the ORM's bulk delete would: the object no longer stands for a row in this session.
        if isinstance(s, UnitAsyncSession):
            s.forget_row(held)
        else:
            s.expunge(held)
    return deleted


async def count_sessions(s: AsyncSession) -> int:
    """How many sessions exist, as seen by this transaction."""
    return int((await _require_async_session(s).scalar(_COUNT)) or 0)
