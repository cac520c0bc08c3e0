"""A ``Database`` belongs to the event loop that first uses it.

Its pooled asyncpg connections are tied to that loop, so using them from another one fails in
obscure ways ("Event loop is closed", "attached to a different loop", "Future ... never
retrieved"). sessiondb refuses up front with ``WrongEventLoop`` while that loop is open; ``dispose()``
releases the binding, and so does the loop closing.
"""

from __future__ import annotations

import asyncio

import pytest

import sessiondb
from sessiondb import Database, PoolSettings, count_sessions, create_session
from tests.pgprobe import backend_states, eventually


async def _work(db: Database) -> int:
    async with db.session() as s:
        await create_session(s)
        return await count_sessions(s)


def run_in_new_loop(db: Database) -> int:
    return asyncio.run(_work(db))


def test_database_used_from_a_second_loop_raises_wrong_event_loop(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=1, max_overflow=0))
    first = asyncio.new_event_loop()
    try:
        # The first loop binds the Database (and leaves a pooled connection) and stays open.
        assert first.run_until_complete(_work(db)) == 1
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
    finally:
        first.close()


def test_database_whose_loop_closed_moves_to_the_next_loop(database_url: str) -> None:
    # Successive asyncio.run() calls (or `with TestClient(app):` blocks) on one module-level Database:
    # the second used to get WrongEventLoop on every request, though nothing could use the old loop.
    db = Database(database_url, PoolSettings(size=1, max_overflow=0))
    assert run_in_new_loop(db) == 1
    assert run_in_new_loop(db) == 2
    assert run_in_new_loop(db) == 3
    stats = db.pool_stats()
    assert (stats["checked_out"], stats["size"]) == (0, 1)

    async def one_backend_left() -> bool:
        return len(await backend_states(database_url)) == 1

    # The old loops' connections are closed, not left to a later garbage collection: their backends end.
    asyncio.run(eventually(one_backend_left, "the dropped connections' backends to exit"))

    async def fast_then_dispose() -> bool:
        found = await db.fast.get_session((await db.fast.create_session()).id) is not None
        await db.dispose()
        return found

    assert asyncio.run(fast_then_dispose())


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
