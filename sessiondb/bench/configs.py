"""The client configurations the bench compares. Each one runs the same workload steps.

Every step (create, read, delete) is its own unit of work, committed before the next begins, and
checks its connection out of the pool and back in, as a web request would.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, ClassVar

import asyncpg
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import NullPool

from sessiondb.database import Database
from sessiondb.model import Session
from sessiondb.queries import create_session, delete_session, get_session
from sessiondb.settings import PoolSettings
from sessiondb.stats import PoolCounters
from sessiondb.urls import asyncpg_dsn, parse_database_url

INSERT_SQL = "INSERT INTO sessions DEFAULT VALUES RETURNING id"
SELECT_SQL = "SELECT id, created_at FROM sessions WHERE id = $1"
DELETE_SQL = "DELETE FROM sessions WHERE id = $1"

# asyncpg's documented way to size a pool; the issue fixes 16. Raised to the concurrency when that
# is larger so that the comparison is about per-operation cost, not about queueing for connections.
RAW_POOL_SIZE = 16


class BenchConfig:
    """One configuration: ``start`` builds its pool, ``create``/``read``/``delete`` are the steps."""

    name: ClassVar[str]

    async def start(self, url: str, concurrency: int, pool: PoolSettings) -> None:
        raise NotImplementedError

    async def create(self) -> Any:
        raise NotImplementedError

    async def read(self, session_id: Any) -> None:
        raise NotImplementedError

    async def delete(self, session_id: Any) -> None:
        raise NotImplementedError

    def counters(self) -> tuple[int | None, int | None, float | None]:
        """``(connections_opened, checkouts, pool_wait_ms_total)`` since ``start``; ``None`` if unknown."""
        raise NotImplementedError

    def pool_description(self) -> str:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError


class RawAsyncpgAutocommit(BenchConfig):
    name = "raw-asyncpg-autocommit"

    async def start(self, url: str, concurrency: int, pool: PoolSettings) -> None:
        self.opened = 0
        self.checkouts = 0
        self.wait_ms = 0.0
        self.size = max(RAW_POOL_SIZE, concurrency)
        self.cache_size = pool.effective_statement_cache_size  # 0 behind PgBouncer

        async def count_connect(_: asyncpg.Connection) -> None:
            self.opened += 1

        self.pool = await asyncpg.create_pool(
            asyncpg_dsn(url),
            min_size=self.size,
            max_size=self.size,
            init=count_connect,
            statement_cache_size=self.cache_size,
        )

    async def _acquire(self) -> Any:
        started = time.perf_counter()
        conn = await self.pool.acquire()
        self.wait_ms += (time.perf_counter() - started) * 1000.0
        self.checkouts += 1
        return conn

    async def create(self) -> Any:
        conn = await self._acquire()
        try:
            return await conn.fetchval(INSERT_SQL)
        finally:
            await self.pool.release(conn)

    async def read(self, session_id: Any) -> None:
        conn = await self._acquire()
        try:
            if await conn.fetchrow(SELECT_SQL, session_id) is None:
                raise AssertionError(f"session {session_id} not found")
        finally:
            await self.pool.release(conn)

    async def delete(self, session_id: Any) -> None:
        conn = await self._acquire()
        try:
            if await conn.execute(DELETE_SQL, session_id) != "DELETE 1":
                raise AssertionError(f"session {session_id} was not deleted")
        finally:
            await self.pool.release(conn)

    def counters(self) -> tuple[int | None, int | None, float | None]:
        return self.opened, self.checkouts, self.wait_ms

    def pool_description(self) -> str:
        cache = "" if self.cache_size == 100 else f", statement_cache_size={self.cache_size}"
        return f"asyncpg.create_pool(min_size={self.size}, max_size={self.size}{cache})"

    async def stop(self) -> None:
        await self.pool.close()


class RawAsyncpgTransaction(RawAsyncpgAutocommit):
    name = "raw-asyncpg-transaction"

    async def create(self) -> Any:
        conn = await self._acquire()
        try:
            async with conn.transaction():
                return await conn.fetchval(INSERT_SQL)
        finally:
            await self.pool.release(conn)

    async def read(self, session_id: Any) -> None:
        conn = await self._acquire()
        try:
            async with conn.transaction():
                found = await conn.fetchrow(SELECT_SQL, session_id)
            if found is None:
                raise AssertionError(f"session {session_id} not found")
        finally:
            await self.pool.release(conn)

    async def delete(self, session_id: Any) -> None:
        conn = await self._acquire()
        try:
            async with conn.transaction():
                status = await conn.execute(DELETE_SQL, session_id)
            if status != "DELETE 1":
                raise AssertionError(f"session {session_id} was not deleted")
        finally:
            await self.pool.release(conn)


class SqlalchemyOrmDefault(BenchConfig):
    name = "sqlalchemy-orm-default"

    async def start(self, url: str, concurrency: int, pool: PoolSettings) -> None:
        # Behind PgBouncer (transaction mode) its named prepared statements would collide between
        # clients; turning both caches off is the one change needed there to work at all.
        no_prepared = {"statement_cache_size": 0, "prepared_statement_cache_size": 0}
        self.pgbouncer = pool.pgbouncer
        self.engine: AsyncEngine = create_async_engine(
            parse_database_url(url), connect_args=no_prepared if pool.pgbouncer else {}
        )
        self.counters_ = PoolCounters()
        self.counters_.listen(self.engine.sync_engine.pool)
        self.sessionmaker = async_sessionmaker(self.engine)

    async def create(self) -> Any:
        async with self.sessionmaker() as s:
            created = Session()
            s.add(created)
            await s.flush()  # the INSERT commit() would send anyway; read the id before commit expires it
            session_id = created.id
            await s.commit()
        return session_id

    async def read(self, session_id: Any) -> None:
        async with self.sessionmaker() as s:
            if await s.get(Session, session_id) is None:
                raise AssertionError(f"session {session_id} not found")

    async def delete(self, session_id: Any) -> None:
        async with self.sessionmaker() as s:
            await s.execute(delete(Session).where(Session.id == session_id))
            await s.commit()

    def counters(self) -> tuple[int | None, int | None, float | None]:
        return self.counters_.connections_opened, self.counters_.checkouts, None

    def pool_description(self) -> str:
        pool = self.engine.sync_engine.pool
        caches = ", prepared statement caches off for PgBouncer" if self.pgbouncer else ""
        return f"SQLAlchemy defaults: {type(pool).__name__}(pool_size=5, max_overflow=10){caches}"

    async def stop(self) -> None:
        await self.engine.dispose()


class SessiondbSession(BenchConfig):
    name = "sessiondb-session"

    def _database(self, url: str, concurrency: int, pool: PoolSettings) -> Database:
        return Database(url, dataclasses.replace(pool, size=concurrency, max_overflow=0))

    async def start(self, url: str, concurrency: int, pool: PoolSettings) -> None:
        self.db = self._database(url, concurrency, pool)

    async def create(self) -> Any:
        async with self.db.session() as s:
            created = await create_session(s)
        return created.id

    async def read(self, session_id: Any) -> None:
        async with self.db.session() as s:
            if await get_session(s, session_id) is None:
                raise AssertionError(f"session {session_id} not found")

    async def delete(self, session_id: Any) -> None:
        async with self.db.session() as s:
            if not await delete_session(s, session_id):
                raise AssertionError(f"session {session_id} was not deleted")

    def counters(self) -> tuple[int | None, int | None, float | None]:
        stats = self.db.pool_stats()
        return int(stats["connections_opened"]), int(stats["checkouts"]), float(stats["wait_ms_total"])

    def pool_description(self) -> str:
        s = self.db.pool_settings
        return (
            f"PoolSettings(size={s.size}, max_overflow={s.max_overflow}, pre_ping={s.pre_ping}, "
            f"statement_cache_size={s.effective_statement_cache_size}, pgbouncer={s.pgbouncer})"
        )

    async def stop(self) -> None:
        await self.db.dispose()


class SessiondbFast(SessiondbSession):
    name = "sessiondb-fast"

    async def create(self) -> Any:
        return (await self.db.fast.create_session()).id

    async def read(self, session_id: Any) -> None:
        if await self.db.fast.get_session(session_id) is None:
            raise AssertionError(f"session {session_id} not found")

    async def delete(self, session_id: Any) -> None:
        if not await self.db.fast.delete_session(session_id):
            raise AssertionError(f"session {session_id} was not deleted")


class _NullPoolDatabase(Database):
    """``Database`` with pooling switched off: every checkout opens a new connection."""

    def _create_engine(self, pool: PoolSettings) -> AsyncEngine:
        return create_async_engine(self.url, poolclass=NullPool, connect_args=self._connect_args(pool))


class SessiondbNullpool(SessiondbSession):
    name = "sessiondb-nullpool"

    def _database(self, url: str, concurrency: int, pool: PoolSettings) -> Database:
        return _NullPoolDatabase(url, pool)

    def pool_description(self) -> str:
        s = self.db.pool_settings
        return f"NullPool (pre_ping={s.pre_ping}, statement_cache_size={s.effective_statement_cache_size})"


PYTHON_CONFIGS: dict[str, type[BenchConfig]] = {
    c.name: c
    for c in (
        RawAsyncpgAutocommit,
        RawAsyncpgTransaction,
        SqlalchemyOrmDefault,
        SessiondbSession,
        SessiondbFast,
        SessiondbNullpool,
    )
}
PGBENCH = "pgbench"
CONFIG_NAMES: tuple[str, ...] = (*PYTHON_CONFIGS, PGBENCH)
