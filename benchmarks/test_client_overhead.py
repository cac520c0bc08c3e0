"""Per-operation client cost of sessiondb's paths vs raw asyncpg, one worker, no contention.

Each measured call is one churn operation: create a session (committed), then delete it by id
(committed), each step with its own checkout. Run::

    .venv/bin/pytest benchmarks/ --benchmark-columns=min,median,mean,ops --benchmark-sort=mean

Compare the medians: the difference from ``raw_asyncpg_*`` is what the abstraction costs per
operation (client CPU plus any extra round trips). See benchmarks/README.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest

from sessiondb import Database, PoolSettings, create_session, delete_session
from sessiondb.urls import asyncpg_dsn

Operation = Callable[[], Awaitable[None]]
ROUNDS = 300


def measure(benchmark: Any, loop: asyncio.AbstractEventLoop, operation: Operation) -> None:
    for _ in range(30):  # warm the pool and the statement caches outside the measurement
        loop.run_until_complete(operation())
    benchmark.pedantic(lambda: loop.run_until_complete(operation()), rounds=ROUNDS, iterations=1)


@pytest.fixture(scope="module")
def raw_pool(bench_url: str, loop: asyncio.AbstractEventLoop) -> Iterator[asyncpg.Pool]:
    async def create() -> asyncpg.Pool:  # built inside the loop, so it binds to that loop
        return await asyncpg.create_pool(asyncpg_dsn(bench_url), min_size=1, max_size=1)

    pool = loop.run_until_complete(create())
    yield pool
    loop.run_until_complete(pool.close())


@pytest.fixture(scope="module")
def db(bench_url: str, loop: asyncio.AbstractEventLoop) -> Iterator[Database]:
    database = Database(bench_url, PoolSettings(size=1, max_overflow=0))
    yield database
    loop.run_until_complete(database.dispose())


def test_raw_asyncpg_autocommit(benchmark: Any, loop: asyncio.AbstractEventLoop, raw_pool: asyncpg.Pool) -> None:
    async def operation() -> None:
        async with raw_pool.acquire() as conn:
            session_id = await conn.fetchval("INSERT INTO sessions DEFAULT VALUES RETURNING id")
        async with raw_pool.acquire() as conn:
            await conn.execute("DELETE FROM sessions WHERE id = $1", session_id)

    measure(benchmark, loop, operation)


def test_raw_asyncpg_transaction(benchmark: Any, loop: asyncio.AbstractEventLoop, raw_pool: asyncpg.Pool) -> None:
    async def operation() -> None:
        async with raw_pool.acquire() as conn, conn.transaction():
            session_id = await conn.fetchval("INSERT INTO sessions DEFAULT VALUES RETURNING id")
        async with raw_pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM sessions WHERE id = $1", session_id)

    measure(benchmark, loop, operation)


def test_sessiondb_fast(benchmark: Any, loop: asyncio.AbstractEventLoop, db: Database) -> None:
    async def operation() -> None:
        created = await db.fast.create_session()
        await db.fast.delete_session(created.id)

    measure(benchmark, loop, operation)


def test_sessiondb_session(benchmark: Any, loop: asyncio.AbstractEventLoop, db: Database) -> None:
    async def operation() -> None:
        async with db.session() as s:
            created = await create_session(s)
        async with db.session() as s:
            await delete_session(s, created.id)

    measure(benchmark, loop, operation)
