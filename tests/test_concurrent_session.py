"""One ``AsyncSession`` shared by concurrent tasks: a clear ``ConcurrentSessionUse`` from sessiondb."""

from __future__ import annotations

import asyncio

import pytest

import sessiondb
from sessiondb import Database, count_sessions, create_session, get_session


async def test_gather_on_one_session_raises_concurrent_session_use(db: Database) -> None:
    with pytest.raises(sessiondb.ConcurrentSessionUse, match=r"one `async with db.session\(\)` per task"):
        async with db.session() as s:
            await asyncio.gather(create_session(s), create_session(s))
    # The block failed, so nothing it did was committed, and the connection came back.
    assert db.pool_stats()["checked_out"] == 0
    async with db.session() as s:
        assert await count_sessions(s) == 0


async def test_gather_mixing_reads_and_writes_raises(db: Database) -> None:
    async with db.session() as s:
        created = await create_session(s)
    with pytest.raises(sessiondb.ConcurrentSessionUse):
        async with db.session() as s:
            await asyncio.gather(get_session(s, created.id), count_sessions(s), create_session(s))
    assert db.pool_stats()["checked_out"] == 0


async def test_one_session_per_task_is_fine(db: Database) -> None:
    async def create() -> None:
        async with db.session() as s:
            await create_session(s)

    await asyncio.gather(*(create() for _ in range(5)))
    async with db.session() as s:
        assert await count_sessions(s) == 5


async def test_sequential_use_from_another_task_is_allowed(db: Database) -> None:
    # Only overlapping use is an error: handing a session to a helper task and awaiting it is fine.
    async with db.session() as s:
        await asyncio.create_task(create_session(s))
        assert await count_sessions(s) == 1
