"""Cancellation while a task holds ``db.session()`` or waits inside ``create_session``.

With one pooled connection and no overflow, a leaked connection shows up at once: ``checked_out``
stays at 1 and the next checkout times out. Every test also checks, from a connection outside the
pool, that no backend is left "idle in transaction".
"""

from __future__ import annotations

import asyncio

import anyio
import asyncpg
import pytest

from sessiondb import Database, PoolSettings, count_sessions, create_session
from sessiondb.urls import asyncpg_dsn
from tests.pgprobe import backend_states, eventually


@pytest.fixture
def pool_settings() -> PoolSettings:
    return PoolSettings(size=1, max_overflow=0, timeout=5.0)


async def assert_pool_recovered(db: Database, url: str, *, discarded: int) -> None:
    """The connection is back, nothing is "idle in transaction", and the next checkout works.

    ``discarded``: connections the pool threw away. A task cancelled between statements keeps its
    connection (the rollback runs to the end); one cancelled while a statement is in flight loses
    it, because SQLAlchemy cannot know what state the statement left it in.
    """
    stats = db.pool_stats()
    assert stats["checked_out"] == 0
    assert stats["connections_lost"] == discarded, stats
    states = [state for _, state, _ in await backend_states(url)]
    assert not [s for s in states if s.startswith("idle in transaction")], states
    async with db.session() as s:  # the next checkout works and the cancelled work was rolled back
        assert await count_sessions(s) == 0
    assert db.pool_stats()["checked_out"] == 0


async def hold_session(db: Database, entered: asyncio.Event) -> None:
    async with db.session() as s:
        await create_session(s)  # the transaction is open and has written a row
        entered.set()
        await asyncio.Event().wait()  # until cancelled


async def test_cancel_while_holding_session(db: Database, database_url: str) -> None:
    entered = asyncio.Event()
    task = asyncio.create_task(hold_session(db, entered))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_pool_recovered(db, database_url, discarded=0)


async def test_repeated_cancellation_during_cleanup(db: Database, database_url: str) -> None:
    # TaskGroups, timeouts and servers shutting down can cancel a task again while it is already
    # unwinding; the rollback and the return to the pool must still run to the end.
    entered = asyncio.Event()
    task = asyncio.create_task(hold_session(db, entered))
    await entered.wait()
    while not task.done():
        task.cancel()
        await asyncio.sleep(0)
    with pytest.raises(asyncio.CancelledError):
        await task
    await assert_pool_recovered(db, database_url, discarded=0)


async def lock_sessions_table(url: str) -> asyncpg.Connection:
    """A connection holding an exclusive lock on ``sessions`` so that INSERTs wait on it."""
    blocker = await asyncpg.connect(asyncpg_dsn(url))
    await blocker.execute("BEGIN; LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE")
    return blocker


async def waiting_on_lock(url: str) -> bool:
    return any(wait == "Lock" for _, _, wait in await backend_states(url))


async def test_cancel_mid_create_session(db: Database, database_url: str) -> None:
    blocker = await lock_sessions_table(database_url)
    try:

        async def create() -> None:
            async with db.session() as s:
                await create_session(s)

        task = asyncio.create_task(create())
        await eventually(lambda: waiting_on_lock(database_url), "the INSERT waits on the table lock")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        await blocker.close()
    await assert_pool_recovered(db, database_url, discarded=1)


async def test_taskgroup_cancels_holder_and_waiter(db: Database, database_url: str) -> None:
    # One task holds the only connection, one is inside create_session waiting for it, and a third
    # fails: the TaskGroup cancels the other two.
    entered = asyncio.Event()

    async def create() -> None:
        async with db.session() as s:
            await create_session(s)

    async def fail() -> None:
        await entered.wait()
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    async def run_group() -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(hold_session(db, entered))
            group.create_task(create())
            group.create_task(fail())

    with pytest.raises(ExceptionGroup) as raised:
        await run_group()
    assert raised.group_contains(RuntimeError, match="boom")
    await assert_pool_recovered(db, database_url, discarded=0)


async def test_taskgroup_cancelled_mid_create_session(db: Database, database_url: str) -> None:
    blocker = await lock_sessions_table(database_url)
    try:

        async def create() -> None:
            async with db.session() as s:
                await create_session(s)

        async def group() -> None:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(create())

        outer = asyncio.create_task(group())
        await eventually(lambda: waiting_on_lock(database_url), "the INSERT waits on the table lock")
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
    finally:
        await blocker.close()
    await assert_pool_recovered(db, database_url, discarded=1)


async def test_anyio_cancel_scope_while_holding_session(db: Database, database_url: str) -> None:
    # anyio (FastAPI/Starlette's task groups) cancels level-triggered: it re-delivers the
    # cancellation at every await inside the scope, including the cleanup's.
    entered = asyncio.Event()
    with anyio.CancelScope() as scope:
        async with anyio.create_task_group() as group:
            group.start_soon(hold_session, db, entered)
            await entered.wait()
            scope.cancel()
    assert scope.cancelled_caught
    await assert_pool_recovered(db, database_url, discarded=0)


async def test_anyio_task_group_cancelled_mid_create_session(db: Database, database_url: str) -> None:
    blocker = await lock_sessions_table(database_url)
    try:

        async def create() -> None:
            async with db.session() as s:
                await create_session(s)

        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as group:
                group.start_soon(create)
                await eventually(lambda: waiting_on_lock(database_url), "the INSERT waits on the table lock")
                scope.cancel()
        assert scope.cancelled_caught
    finally:
        await blocker.close()
    await assert_pool_recovered(db, database_url, discarded=1)
