"""``db.fast``: one committed statement per call, on the same pool as ``db.session()``."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC

import asyncpg
import pytest

from sessiondb import ConnectionLost, Database, InvalidSessionId, PoolSettings, WrongEventLoop
from sessiondb.fast import SessionRecord
from sessiondb.urls import asyncpg_dsn
from tests.helpers import fetchval
from tests.pgprobe import backend_states, eventually, terminate_backends


async def test_create_returns_a_committed_row_with_plain_uuid_and_utc(db: Database, database_url: str) -> None:
    created = await db.fast.create_session()
    assert isinstance(created, SessionRecord)
    assert type(created.id) is uuid.UUID
    assert created.created_at.tzinfo is UTC
    # Committed before returning: a separate connection sees it at once.
    assert await fetchval(database_url, "SELECT count(*) FROM sessions WHERE id = $1", created.id) == 1
    assert created.to_dict() == {"id": str(created.id), "created_at": created.created_at.isoformat()}
    assert created.to_dict()["created_at"].endswith("+00:00")


async def test_get_finds_by_uuid_or_any_case_string_and_none_when_absent(db: Database) -> None:
    created = await db.fast.create_session()
    assert await db.fast.get_session(created.id) == created
    assert await db.fast.get_session(str(created.id).upper()) == created
    assert await db.fast.get_session(uuid.uuid4()) is None


async def test_delete_is_committed_and_idempotent(db: Database, database_url: str) -> None:
    created = await db.fast.create_session()
    assert await db.fast.delete_session(str(created.id)) is True
    assert await fetchval(database_url, "SELECT count(*) FROM sessions WHERE id = $1", created.id) == 0
    assert await db.fast.delete_session(created.id) is False
    assert await db.fast.get_session(created.id) is None


async def test_rows_are_shared_with_the_orm_path(db: Database) -> None:
    from sessiondb import get_session

    created = await db.fast.create_session()
    async with db.session() as s:
        loaded = await get_session(s, created.id)
    assert loaded is not None and (loaded.id, loaded.created_at) == (created.id, created.created_at)


@pytest.mark.parametrize("bad", ["nope", "", "{12345678-1234-1234-1234-123456789abc}", 42, None, b"x" * 16])
async def test_invalid_id_raises_before_any_checkout(db: Database, bad: object) -> None:
    before = db.pool_stats()["checkouts"]
    with pytest.raises(InvalidSessionId):
        await db.fast.get_session(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await db.fast.delete_session(bad)  # type: ignore[arg-type]
    assert db.pool_stats()["checkouts"] == before


async def test_uses_the_databases_pool_and_returns_the_connection(db: Database) -> None:
    before = db.pool_stats()
    created = await db.fast.create_session()
    await db.fast.get_session(created.id)
    await db.fast.delete_session(created.id)
    after = db.pool_stats()
    assert after["checkouts"] - before["checkouts"] == 3
    assert after["checked_out"] == 0


async def test_connection_returns_to_the_pool_when_the_statement_fails(empty_database_url: str) -> None:
    db = Database(empty_database_url, PoolSettings(size=1, max_overflow=0, timeout=2.0))
    try:
        with pytest.raises(asyncpg.UndefinedTableError):  # no migrations applied: no sessions table
            await db.fast.create_session()
        assert db.pool_stats()["checked_out"] == 0
        # The one pooled connection is usable again (a leak would time out here).
        async with db.session() as s:
            assert s.in_transaction()
        assert db.pool_stats()["connections_lost"] == 0
    finally:
        await db.dispose()


async def _named_prepared_statements(db: Database) -> int:
    pooled = await db.engine.raw_connection()
    try:
        # Unnamed statements are not listed here; the ones asyncpg caches by name are.
        return int(await pooled.driver_connection.fetchval("SELECT count(*) FROM pg_prepared_statements"))
    finally:
        pooled.close()


@pytest.mark.parametrize("pgbouncer", [False, True])
async def test_pgbouncer_mode_leaves_no_named_prepared_statements(database_url: str, pgbouncer: bool) -> None:
    settings = PoolSettings(size=1, max_overflow=0, pgbouncer=pgbouncer, statement_cache_size=0 if pgbouncer else 100)
    db = Database(database_url, settings)
    try:
        created = await db.fast.create_session()
        assert await db.fast.get_session(created.id) == created
        assert await db.fast.delete_session(created.id) is True
        named = await _named_prepared_statements(db)
        assert (named == 0) if pgbouncer else (named >= 3)
    finally:
        await db.dispose()


async def test_cancellation_at_any_point_never_leaks_a_connection(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=2, max_overflow=0, timeout=5.0))
    try:
        for yields in range(12):  # cancel after 0..11 loop iterations: before, during and after the statement
            task = asyncio.create_task(db.fast.create_session())
            for _ in range(yields):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert db.pool_stats()["checked_out"] == 0, yields
        # Both pooled connections (or their replacements) still work.
        created = await asyncio.gather(db.fast.create_session(), db.fast.create_session())
        assert len({c.id for c in created}) == 2
    finally:
        await db.dispose()


async def test_connection_lost_mid_statement_is_connection_lost(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=1, max_overflow=0, timeout=5.0))
    blocker = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await blocker.execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
        task = asyncio.create_task(db.fast.create_session())

        async def waiting_on_lock() -> bool:
            return any(wait == "Lock" for _, _, wait in await backend_states(database_url))

        await eventually(waiting_on_lock, "the INSERT waits on the table lock")
        assert await terminate_backends(database_url) == 1
        with pytest.raises(ConnectionLost, match="whether a write was applied is unknown"):
            await task
        await blocker.execute("ROLLBACK")
        stats = db.pool_stats()
        assert stats["checked_out"] == 0 and stats["connections_lost"] == 1
        assert (await db.fast.create_session()).id  # a fresh connection replaces the lost one
    finally:
        await blocker.close()
        await db.dispose()


def test_fast_path_refuses_a_second_event_loop(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=1, max_overflow=0))

    async def create() -> None:
        await db.fast.create_session()

    first = asyncio.new_event_loop()
    try:
        first.run_until_complete(create())  # binds the Database; the loop stays open
        with pytest.raises(WrongEventLoop):
            asyncio.run(create())
        first.run_until_complete(db.dispose())
    finally:
        first.close()
