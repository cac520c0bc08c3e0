"""``Database``: the async engine, its tuned asyncpg pool, and the unit-of-work context."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import time
from collections.abc import AsyncIterator, Coroutine
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from sessiondb.errors import ConfigurationError, DatabaseUnavailable, PoolTimeout, WrongEventLoop
from sessiondb.failures import translate_failure
from sessiondb.liveness import begin_on_checkout, install_liveness_checks
from sessiondb.settings import PoolSettings
from sessiondb.stats import PoolCounters, pool_snapshot
from sessiondb.unit import UnitAsyncSession, UnitOfWork
from sessiondb.urls import describe_server, parse_database_url

if TYPE_CHECKING:
    from sessiondb.fast import FastSessions

DATABASE_URL_ENV = "DATABASE_URL"


class Database:
    """Owns one async engine (asyncpg pool) and the ``AsyncSession`` factory.

    Create one per process and event loop, share it between tasks, and give each task its own
    session via ``db.session()`` or ``Depends(db.get_db)``.
    """

    def __init__(self, url: str | URL, pool: PoolSettings | None = None) -> None:
        if pool is None:
            pool = PoolSettings()
        if not isinstance(pool, PoolSettings):
            raise TypeError(f"pool must be a PoolSettings, got {type(pool).__name__}")
        self.url: URL = parse_database_url(url)
        self.pool_settings = pool
        self.server = describe_server(self.url)
        self.engine = self._create_engine(pool)
        if pool.pre_ping:
            install_liveness_checks(self.engine)  # pre-ping without its extra round trips
        self._counters = PoolCounters()
        self._counters.listen(self.engine.sync_engine.pool)
        # expire_on_commit=False: reading an attribute after commit must not trigger lazy IO,
        # which in async code fails with MissingGreenlet.
        # UnitAsyncSession: db.session()'s unit of work (sessiondb/unit.py); two tasks on one session
        # fail with ConcurrentSessionUse (sessiondb/guard.py).
        self.session_options: dict[str, Any] = {"expire_on_commit": False}
        self.sessionmaker = async_sessionmaker(self.engine, class_=UnitAsyncSession, **self.session_options)
        # The loop whose connections the pool holds; set on first use, cleared by dispose().
        self._loop: asyncio.AbstractEventLoop | None = None

    def _create_engine(self, pool: PoolSettings) -> AsyncEngine:
        return create_async_engine(
            self.url,
            pool_size=pool.size,
            max_overflow=pool.max_overflow,
            pool_timeout=pool.timeout,
            pool_recycle=-1 if pool.recycle is None else pool.recycle,
            pool_pre_ping=pool.pre_ping,
            pool_use_lifo=pool.use_lifo,
            connect_args=self._connect_args(pool),
        )

    @staticmethod
    def _connect_args(pool: PoolSettings) -> dict[str, Any]:
        args: dict[str, Any] = {
            "statement_cache_size": pool.effective_statement_cache_size,
            "command_timeout": pool.command_timeout,
            "timeout": pool.connect_timeout,
            "server_settings": {"application_name": pool.application_name},
        }
        if pool.pgbouncer:
            # PgBouncer in transaction mode hands each transaction to any server connection, so a
            # named prepared statement made on one is missing (or already taken) on the next. With
            # both caches off (asyncpg's and the SQLAlchemy dialect's own), asyncpg uses the unnamed
            # statement, prepared and executed inside the same transaction: nothing outlives it.
            args["prepared_statement_cache_size"] = 0
        return args

    @classmethod
    def from_env(cls, pool: PoolSettings | None = None) -> Database:
        """``Database(os.environ["DATABASE_URL"], PoolSettings.from_env())``."""
        url = os.environ.get(DATABASE_URL_ENV, "").strip()
        if not url:
            raise ConfigurationError(f"{DATABASE_URL_ENV} is not set")
        return cls(url, PoolSettings.from_env() if pool is None else pool)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    def session(self) -> SessionBlock:
        """``async with db.session() as s``: an ``AsyncSession`` that commits if the block succeeds, rolls
        back and re-raises if it raises, and always returns the connection to the pool, even when the
        task is cancelled.

        Failures with a certain meaning come out typed: ``PoolTimeout``, ``DatabaseUnavailable``,
        ``ConnectionLost``, ``QueryTimeout``, ``ConcurrentSessionUse``, ``WrongEventLoop``.
        """
        return SessionBlock(self)

    def _bind_to_running_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif self._loop is not loop:
            if self._loop.is_closed():
                # Its loop is gone (asyncio.run() returned, a test client's loop closed): nothing can use its
                # connections any more, so drop them, as dispose() from another loop does, and move here.
                self._drop_connections_of_other_loop()
                self._loop = loop
                return
            raise WrongEventLoop(
                f"{self!r} pools connections created on another event loop ({self._loop!r}) and cannot use "
                "them from this one. Create one Database per event loop (for example inside the "
                "function asyncio.run() runs, or in a FastAPI lifespan), or `await db.dispose()` on the "
                "old loop before reusing it"
            )

    def _drop_connections_of_other_loop(self) -> None:
        """Forget the pool's connections without IO: they belong to another loop and cannot be closed here."""
        self.engine.sync_engine.dispose(close=False)
        # They sit in reference cycles (asyncpg's connection and protocol): collected only now do their
        # sockets close, so the server ends their backends instead of keeping them until some later
        # collection (enough event loops in a row, e.g. test clients, would reach max_connections).
        gc.collect()

    @functools.cached_property
    def fast(self) -> FastSessions:
        """One committed statement per call on this pool, no ORM objects: see ``sessiondb.fast``."""
        from sessiondb.fast import FastSessions

        return FastSessions(self)

    async def get_db(self) -> AsyncIterator[AsyncSession]:
        """FastAPI dependency: ``Depends(db.get_db, scope="function")``. Same semantics as ``db.session()``.

        ``scope="function"`` (FastAPI 0.121+) runs the commit before the response is sent; with
        FastAPI's default scope it runs after, so a client could see success for an uncommitted row.
        """
        async with self.session() as s:
            yield s

    async def _checkout(self) -> PoolProxiedConnection:
        """A pooled connection with ``BEGIN`` sent (which doubles as the pre-ping), or a typed error."""
        counters = self._counters
        counters.requests_waiting += 1
        started = time.perf_counter()
        try:
            with begin_on_checkout():
                fairy: PoolProxiedConnection = await greenlet_spawn(self.engine.sync_engine.raw_connection)
            return fairy
        except sa_exc.TimeoutError:
            raise PoolTimeout(self._pool_timeout_message()) from None
        except self.connect_errors as error:
            raise self.unavailable(error) from error
        finally:
            counters.requests_waiting -= 1
            counters.wait_ms_total += (time.perf_counter() - started) * 1000.0

    @functools.cached_property
    def connect_errors(self) -> tuple[type[BaseException], ...]:
        """What a failed connect raises through the pool: asyncpg's, the adapter's and SQLAlchemy's errors."""
        dbapi_error: type[BaseException] = self.engine.sync_engine.dialect.loaded_dbapi.Error
        return (TimeoutError, OSError, asyncpg.PostgresError, sa_exc.DBAPIError, dbapi_error)

    def unavailable(self, error: BaseException) -> DatabaseUnavailable:
        """A ``DatabaseUnavailable`` naming host and port (never the password) for ``error``."""
        original = getattr(error, "orig", None) or error
        reason = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
        return DatabaseUnavailable(f"cannot connect to PostgreSQL at {self.server}: {reason}")

    def _pool_timeout_message(self) -> str:
        stats = self.pool_stats()
        settings = self.pool_settings
        return (
            f"no pooled connection became free within {settings.timeout:g}s "
            f"(size={settings.size}, max_overflow={settings.max_overflow}, "
            f"checked_out={stats['checked_out']}, overflow={stats['overflow']}, "
            f"waiting={stats['requests_waiting']}); raise PoolSettings.size/max_overflow or "
            "shorten the transactions holding connections"
        )

    def pool_stats(self) -> dict[str, int | float]:
        """``size``, ``checked_out``, ``overflow``, ``connections_opened``, ``connections_lost``,
        ``checkouts``, ``requests_waiting`` and ``wait_ms_total`` (since the pool was created)."""
        return pool_snapshot(self.engine.sync_engine.pool, self._counters)

    async def dispose(self) -> None:
        """Close every pooled connection. The Database can be used again afterwards, from any loop.

        Called from another event loop than the pool's, it drops the old loop's connections without
        touching them (they cannot be closed from here) instead of failing.
        """
        if self._loop is not None and self._loop is not asyncio.get_running_loop():
            self._drop_connections_of_other_loop()
        else:
            await self.engine.dispose()
        self._loop = None


class SessionBlock:
    """What ``db.session()`` returns; ``async with`` it once for one unit of work.

    A class rather than ``@asynccontextmanager``: every round trip of the checkout and the commit is
    resumed through each coroutine frame above it, and a generator-based context manager adds two.
    """

    __slots__ = ("_db", "_session")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._session: UnitAsyncSession | None = None

    async def __aenter__(self) -> AsyncSession:
        if self._session is not None:
            raise RuntimeError("a db.session() block cannot be entered twice; call db.session() again")
        db = self._db
        db._bind_to_running_loop()
        s = UnitAsyncSession(db.engine, **db.session_options)  # what db.sessionmaker() makes, minus its kw merge
        s.attach_unit(UnitOfWork(db.engine.sync_engine, await db._checkout(), db.server))
        self._session = s
        return s

    async def __aexit__(self, exc_type: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        s = self._session
        assert s is not None
        try:
            if error is None:
                try:
                    await s.commit()
                except BaseException as commit_error:
                    await self._fail(s, commit_error, during_commit=True)
                    raise
            else:
                await self._fail(s, error, during_commit=False)  # returning None re-raises the block's error
        finally:
            # Mostly released at once: nothing is left to send (the transaction has ended or the connection
            # is discarded) and the pool keeps the connection, so nothing can interrupt it.
            if not s.release_unit_if_no_io():
                await _run_to_completion(_release_when_others_are_done(s))

    async def _fail(self, s: UnitAsyncSession, error: BaseException, *, during_commit: bool) -> None:
        """Roll back (to the end, even if cancelled meanwhile), then raise ``error``'s typed form, if any."""
        await _run_to_completion(_rollback_quietly(s))
        translated = translate_failure(error, self._db.server, during_commit=during_commit)
        if translated is not None:
            raise translated from error


async def _rollback_quietly(s: UnitAsyncSession) -> None:
    # The rollback only tidies up: if it fails too (the connection is already gone), the caller
    # must see the original error, and release_unit() discards the broken connection.
    await s.wait_for_other_tasks()
    with contextlib.suppress(Exception):
        await s.rollback()


async def _release_when_others_are_done(s: UnitAsyncSession) -> None:
    await s.wait_for_other_tasks()  # let a stray task's statement finish before the connection goes back
    await greenlet_spawn(s.release_unit)  # where the pool can await closing an overflow connection


async def _run_to_completion(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run ``cleanup`` to the end even if this task is cancelled, once or many times, meanwhile.

    The cleanup runs in a task of its own behind ``asyncio.shield``; every cancellation that
    arrives while waiting is held back and re-raised only once the cleanup has finished, so a
    connection is always rolled back and returned rather than abandoned halfway.
    """
    task = asyncio.ensure_future(cleanup)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as error:
            if task.done():  # the cleanup itself was cancelled, not just us
                raise
            cancelled = error
        else:
            break
    if cancelled is not None:
        raise cancelled


_default_database: Database | None = None


def default_database() -> Database:
    """The process-wide ``Database.from_env()``, created on first use (never at import time)."""
    global _default_database
    if _default_database is None:
        _default_database = Database.from_env()
    return _default_database


async def get_db() -> AsyncIterator[AsyncSession]:
    """FastAPI dependency on the default ``Database`` from ``DATABASE_URL``."""
    async with default_database().session() as s:
        yield s
