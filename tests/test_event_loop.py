"""A ``Database`` belongs to the event loop that first uses it.

Its pooled asyncpg connections are tied to that loop, so using them from another one fails in
obscure ways ("Event loop is closed", "attached to a different loop", "Future ... never
retrieved"). sessiondb refuses up front with ``WrongEventLoop``; ``dispose()`` releases the binding.
"""

from __future__ import annotations

import asyncio

import pytest

import sessiondb
from sessiondb import Database, PoolSettings, count_sessions, create_session


def run_in_new_loop(db: Database) -> int:
    async def work() -> int:
        async with db.session() as s:
            await create_session(s)
            return await count_sessions(s)

    return asyncio.run(work())


def test_database_used_from_a_second_loop_raises_wrong_event_loop(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=1, max_overflow=0))
    assert run_in_new_loop(db) == 1  # the first loop binds the Database (and leaves a pooled connection)
    with pytest.raises(sessiondb.WrongEventLoop, match="one Database per event loop"):
        run_in_new_loop(db)

    async def dispose_and_reuse() -> int:
        # dispose() from the new loop drops the old loop's connections; then this loop may use it.
        await db.dispose()
        async with db.session() as s:
            count = await count_sessions(s)
        await db.dispose()
        return count

    assert asyncio.run(dispose_and_reuse()) == 1


def test_database_disposed_on_its_loop_can_move_to_another(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=1, max_overflow=0))

    async def work_then_dispose() -> int:
        async with db.session() as s:
            await create_session(s)
            count = await count_sessions(s)
        await db.dispose()
        return count

    assert asyncio.run(work_then_dispose()) == 1
    assert asyncio.run(work_then_dispose()) == 2


async def test_database_created_outside_a_loop_works_inside_one(database_url: str) -> None:
    # Creating a Database does no IO and binds nothing: module-level `db = Database(...)` is fine.
    db = Database(database_url)
    try:
        async with db.session() as s:
            assert await count_sessions(s) == 0
    finally:
        await db.dispose()
