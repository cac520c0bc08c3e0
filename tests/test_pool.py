"""Pool exhaustion: more concurrent users than size + max_overflow, with a short checkout timeout."""

from __future__ import annotations

import asyncio
import logging

import pytest

import sessiondb
from sessiondb import Database, PoolSettings, count_sessions, create_session
from tests.pgprobe import backend_states, eventually


@pytest.fixture
def pool_settings() -> PoolSettings:
    return PoolSettings(size=1, max_overflow=1, timeout=0.2)


async def test_exhausted_pool_raises_pool_timeout_with_numbers_then_recovers(db: Database) -> None:
    holding = asyncio.Event()
    release = asyncio.Event()
    entered = 0

    async def hold() -> None:
        nonlocal entered
        async with db.session() as s:
            await create_session(s)
            entered += 1
            if entered == 2:
                holding.set()
            await release.wait()

    holders = [asyncio.create_task(hold()) for _ in range(2)]
    await holding.wait()  # both connections (size 1 + overflow 1) are checked out

    with pytest.raises(sessiondb.PoolTimeout) as raised:
        async with db.session():
            pass
    message = str(raised.value)
    for number in ("size=1", "max_overflow=1", "checked_out=2", "0.2s"):
        assert number in message, message
    assert isinstance(raised.value, TimeoutError)

    release.set()
    await asyncio.gather(*holders)
    assert db.pool_stats()["checked_out"] == 0
    # Load has dropped: the pool serves normally again and the holders' work was committed.
    async with db.session() as s:
        assert await count_sessions(s) == 2
    assert db.pool_stats()["checked_out"] == 0


async def test_waiters_within_timeout_are_served(db: Database) -> None:
    # Four users on two connections, each finishing quickly: waiting is not failing.
    async def create() -> None:
        async with db.session() as s:
            await create_session(s)

    await asyncio.gather(*(create() for _ in range(4)))
    async with db.session() as s:
        assert await count_sessions(s) == 4


@pytest.mark.parametrize("orm_used", [False, True], ids=["functions-only", "orm-too"])
async def test_overflow_connections_are_closed_cleanly_on_return(
    db: Database, database_url: str, orm_used: bool, caplog: pytest.LogCaptureFixture
) -> None:
    # Returning an overflow connection closes it, which is IO: it must run where SQLAlchemy can await
    # it, not fail inside the pool ("Exception closing connection ... MissingGreenlet") and leave the
    # socket to the garbage collector.
    both_in = asyncio.Event()
    inside = 0

    async def use() -> None:
        nonlocal inside
        async with db.session() as s:
            await create_session(s)
            if orm_used:
                await count_sessions(s)
            inside += 1
            if inside == 2:
                both_in.set()
            await both_in.wait()

    with caplog.at_level(logging.ERROR, logger="sqlalchemy.pool"):
        await asyncio.gather(use(), use())
    assert [r.getMessage() for r in caplog.records] == []
    stats = db.pool_stats()
    assert (stats["checked_out"], stats["overflow"], stats["connections_lost"]) == (0, 0, 0)
    await eventually(lambda: _backends_are(database_url, 1), "the overflow connection's backend exits")


async def _backends_are(url: str, count: int) -> bool:
    return len(await backend_states(url)) == count
