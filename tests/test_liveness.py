"""A dead pooled connection costs a reconnect, not an error, on both paths (what pre-ping promises).

``db.session()`` uses its BEGIN as the liveness check and ``db.fast`` a local one, instead of
SQLAlchemy's three-round-trip pre-ping; these prove the promise still holds.
"""

from __future__ import annotations

import asyncio

from sessiondb import Database, PoolSettings, create_session
from tests.helpers import fetchval


async def _fill_pool(db: Database, n: int) -> None:
    async def one() -> None:
        async with db.session() as s:
            await create_session(s)

    await asyncio.gather(*(one() for _ in range(n)))
    assert db.pool_stats()["size"] == n


async def _terminate_pool_backends(database_url: str) -> int:
    return int(
        await fetchval(
            database_url,
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'sessiondb' AND pid <> pg_backend_pid()",
        )
    )


async def test_session_survives_terminated_backends(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=3, max_overflow=0))
    try:
        await _fill_pool(db, 3)
        assert await _terminate_pool_backends(database_url) == 3
        async with db.session() as s:
            created = await create_session(s)
        assert await fetchval(database_url, "SELECT count(*) FROM sessions WHERE id = $1", created.id) == 1
        assert db.pool_stats()["connections_lost"] >= 1
        assert db.pool_stats()["checked_out"] == 0
    finally:
        await db.dispose()


async def test_fast_path_survives_terminated_backends(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=3, max_overflow=0))
    try:
        await _fill_pool(db, 3)
        assert await _terminate_pool_backends(database_url) == 3
        await asyncio.sleep(0.1)  # let the event loop read the server's goodbye
        created = await db.fast.create_session()
        assert await db.fast.get_session(created.id) == created
        assert db.pool_stats()["connections_lost"] >= 1
    finally:
        await db.dispose()


async def test_session_survives_repeated_terminations_without_a_pause(database_url: str) -> None:
    # Checkout follows the terminate with no deliberate pause, so either check (asyncpg already saw
    # the close, or BEGIN fails on the dead socket) may be the one that finds it; both must recover.
    db = Database(database_url, PoolSettings(size=1, max_overflow=0))
    try:
        await _fill_pool(db, 1)
        for _ in range(3):
            await _terminate_pool_backends(database_url)
            async with db.session() as s:
                await create_session(s)
        assert db.pool_stats()["connections_lost"] >= 1
    finally:
        await db.dispose()
