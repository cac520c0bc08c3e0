"""Server- and client-side timeouts firing inside ``db.session()``.

- ``idle_in_transaction_session_timeout``: the server closes the connection; the caller gets
  ``ConnectionLost``, the connection is discarded, and the next request gets a fresh one.
- ``statement_timeout``: the server cancels the statement; the caller gets ``QueryTimeout``. The
  connection itself is healthy: it is rolled back and kept.
- ``idle_session_timeout`` on a pooled connection: the pre-ping replaces it; the caller sees nothing.
- ``PoolSettings.command_timeout``: asyncpg gives up client-side; the caller gets ``QueryTimeout``
  and the connection, whose state is unknown, is discarded.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

import sessiondb
from sessiondb import Database, PoolSettings, count_sessions, create_session
from tests.pgprobe import backend_gone, backend_states, eventually


@pytest.fixture
def pool_settings() -> PoolSettings:
    return PoolSettings(size=1, max_overflow=0, timeout=5.0)


async def backend_pid(s: AsyncSession) -> int:
    return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def assert_served_normally(db: Database, url: str, *, committed: int) -> int:
    """The pool is back at baseline, nothing is idle in transaction, and a new request works."""
    assert db.pool_stats()["checked_out"] == 0
    assert not [s for _, s, _ in await backend_states(url) if s.startswith("idle in transaction")]
    async with db.session() as s:
        assert await count_sessions(s) == committed
        await create_session(s)
        return await backend_pid(s)


async def test_idle_in_transaction_timeout_discards_connection(db: Database, database_url: str) -> None:
    pids: list[int] = []

    async def idle_too_long() -> None:
        async with db.session() as s:
            await s.execute(text("SET idle_in_transaction_session_timeout = '100ms'"))
            await create_session(s)
            pids.append(await backend_pid(s))
            # Sit idle inside the transaction until the server gives up on us.
            await eventually(lambda: backend_gone(database_url, pids[0]), "the server ends the idle transaction")
            await create_session(s)

    with pytest.raises(sessiondb.ConnectionLost, match="not committed") as raised:
        await idle_too_long()
    assert "connection was discarded" in str(raised.value)
    assert db.pool_stats()["connections_lost"] == 1
    assert await assert_served_normally(db, database_url, committed=0) != pids[0]


async def test_statement_timeout_rolls_back_and_keeps_connection(db: Database, database_url: str) -> None:
    pids: list[int] = []

    async def too_slow() -> None:
        async with db.session() as s:
            await create_session(s)
            pids.append(await backend_pid(s))
            await s.execute(text("SET LOCAL statement_timeout = '50ms'"))
            await s.execute(text("SELECT pg_sleep(30)"))

    with pytest.raises(sessiondb.QueryTimeout, match="statement_timeout") as raised:
        await too_slow()
    assert isinstance(raised.value, TimeoutError)
    # The statement failed, not the connection: it was rolled back and stays in the pool.
    assert db.pool_stats()["connections_lost"] == 0
    assert await assert_served_normally(db, database_url, committed=0) == pids[0]


@pytest.mark.parametrize("pool_settings", [PoolSettings(size=1, max_overflow=0, command_timeout=0.2)])
async def test_command_timeout_discards_connection(db: Database, database_url: str) -> None:
    pids: list[int] = []

    async def too_slow() -> None:
        async with db.session() as s:
            await create_session(s)
            pids.append(await backend_pid(s))
            await s.execute(text("SELECT pg_sleep(30)"))

    with pytest.raises(sessiondb.QueryTimeout, match="command_timeout"):
        await too_slow()
    assert db.pool_stats()["connections_lost"] == 1
    await eventually(lambda: backend_gone(database_url, pids[0]), "the abandoned backend exits")
    assert await assert_served_normally(db, database_url, committed=0) != pids[0]


async def test_callers_own_timeout_is_not_reported_as_a_query_timeout(db: Database, database_url: str) -> None:
    # Only asyncpg's command_timeout becomes QueryTimeout; the caller's asyncio.timeout() is theirs.
    async def slow_request() -> None:
        async with db.session() as s:
            await create_session(s)
            async with asyncio.timeout(0.1):
                await s.execute(text("SELECT pg_sleep(30)"))

    with pytest.raises(TimeoutError) as raised:
        await slow_request()
    assert not isinstance(raised.value, sessiondb.SessionDBError)
    assert await assert_served_normally(db, database_url, committed=0)


async def test_idle_session_timeout_on_pooled_connection_is_invisible(db: Database, database_url: str) -> None:
    # The server (PostgreSQL 14+) or a proxy drops a connection while it sits idle in the pool:
    # the checkout pre-ping replaces it and the caller never sees an error.
    async with db.session() as s:
        if int((await s.execute(text("SHOW server_version_num"))).scalar_one()) < 140000:
            pytest.skip("idle_session_timeout needs PostgreSQL 14+")
        await s.execute(text("SET idle_session_timeout = '100ms'"))  # session-level: outlives the commit
        pid = await backend_pid(s)
    await eventually(lambda: backend_gone(database_url, pid), "the server drops the idle pooled connection")
    assert await assert_served_normally(db, database_url, committed=0) != pid
    assert db.pool_stats()["connections_lost"] == 1
