"""Server restarts and killed backends, on a dedicated embedded server so the suite's is undisturbed.

- Pooled connections that died while idle (restart, ``pg_terminate_backend``) are replaced at
  checkout by the pre-ping: no error reaches the caller.
- A connection lost mid-transaction raises ``ConnectionLost``; it is discarded, never reused.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from conftest import PgServer
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

import sessiondb
from sessiondb import Database, PoolSettings, apply_migrations, count_sessions, create_session
from sessiondb.embedded import embedded_postgres
from sessiondb.urls import asyncpg_dsn
from tests.helpers import fetchval
from tests.pgprobe import APPLICATION_NAME, backend_states, terminate_backend, terminate_backends

POOL = PoolSettings(size=2, max_overflow=0, timeout=5.0)


@pytest.fixture(scope="module")
def fault_server() -> Iterator[PgServer]:
    with embedded_postgres(durable=False) as server:
        yield PgServer(make_url(server.url), server)


@pytest.fixture(scope="module")
def fault_template(fault_server: PgServer) -> Iterator[str]:
    with fault_server.janitor("fault_template") as _:
        apply_migrations(fault_server.url_for("fault_template"))
        yield "fault_template"


@pytest.fixture
def fault_url(fault_server: PgServer, fault_template: str) -> Iterator[str]:
    name = f"f_{uuid.uuid4().hex[:12]}"
    with fault_server.janitor(name, template=fault_template):
        yield fault_server.url_for(name)


async def backend_pid(s: AsyncSession) -> int:
    return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def fill_pool(db: Database) -> set[int]:
    """Check out every pooled connection at once, so the pool holds ``size`` idle ones after."""
    ready = asyncio.Event()
    pids: set[int] = set()

    async def hold() -> None:
        async with db.session() as s:
            pids.add(await backend_pid(s))
            if len(pids) == POOL.size:
                ready.set()
            await ready.wait()

    await asyncio.gather(*(hold() for _ in range(POOL.size)))
    assert db.pool_stats()["size"] == POOL.size
    return pids


async def use_every_connection(db: Database) -> set[int]:
    """Run ``size`` concurrent requests that each create a session; their backend pids."""
    ready = asyncio.Event()
    pids: set[int] = set()

    async def work() -> None:
        async with db.session() as s:
            await create_session(s)
            pids.add(await backend_pid(s))
            if len(pids) == POOL.size:
                ready.set()
            await ready.wait()

    await asyncio.gather(*(work() for _ in range(POOL.size)))
    return pids


async def test_server_restart_is_invisible_to_callers(fault_server: PgServer, fault_url: str) -> None:
    db = Database(fault_url, POOL)
    try:
        before = await fill_pool(db)
        assert fault_server.embedded is not None
        await asyncio.to_thread(fault_server.embedded.restart)
        # Both pooled connections are dead; the pre-ping replaces each at checkout.
        after = await use_every_connection(db)
        assert not before & after
        assert db.pool_stats()["connections_lost"] == POOL.size
        async with db.session() as s:
            assert await count_sessions(s) == POOL.size
    finally:
        await db.dispose()


async def test_terminated_backends_are_invisible_to_callers(fault_url: str) -> None:
    db = Database(fault_url, POOL)
    try:
        before = await fill_pool(db)
        assert await terminate_backends(fault_url) == POOL.size
        after = await use_every_connection(db)
        assert not before & after
        assert db.pool_stats()["connections_lost"] == POOL.size
    finally:
        await db.dispose()


@pytest.mark.parametrize("operation", ["create", "get", "delete"])
async def test_fast_path_recovers_from_backends_terminated_just_before_the_call(
    fault_url: str, operation: str
) -> None:
    # db.fast checks liveness locally (no round trip): right after pg_terminate_backend, asyncpg may not
    # have read the server's goodbye yet, and calls failed with ConnectionLost ("terminating connection
    # due to administrator command", "cannot switch to state ...") about half the time.
    db = Database(fault_url, POOL)
    admin = await asyncpg.connect(asyncpg_dsn(fault_url))
    trials = 10
    try:
        existing = [(await db.fast.create_session()).id for _ in range(trials * POOL.size)]
        results: list[object] = []
        for trial in range(trials):
            await fill_pool(db)
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name = $1",
                APPLICATION_NAME,
            )
            batch = existing[trial * POOL.size : (trial + 1) * POOL.size]
            calls = {
                "create": lambda _: db.fast.create_session(),
                "get": db.fast.get_session,
                "delete": db.fast.delete_session,
            }[operation]
            results += await asyncio.gather(*(calls(sid) for sid in batch))
        assert db.pool_stats()["checked_out"] == 0
        rows = await fetchval(fault_url, "SELECT count(*) FROM sessions")
        if operation == "create":
            assert rows == 2 * len(existing)  # each create ran exactly once
        elif operation == "get":
            assert [getattr(r, "id", None) for r in results] == existing
        else:
            assert results == [True] * len(existing) and rows == 0
    finally:
        await admin.close()
        await db.dispose()


async def test_connection_lost_mid_transaction(fault_url: str) -> None:
    db = Database(fault_url, POOL)
    killed: list[int] = []

    async def killed_midway() -> None:
        async with db.session() as s:
            await create_session(s)
            killed.append(await backend_pid(s))
            await terminate_backend(fault_url, killed[0])
            await create_session(s)

    try:
        with pytest.raises(sessiondb.ConnectionLost) as raised:
            await killed_midway()
        message = str(raised.value)
        assert "not committed" in message
        assert "discarded" in message
        assert db.server in message
        assert isinstance(raised.value, sessiondb.DatabaseUnavailable)
        stats = db.pool_stats()
        assert stats["checked_out"] == 0
        assert stats["connections_lost"] == 1
        # The dead connection is never handed out again: every pooled backend is a live, new one.
        after = await use_every_connection(db)
        assert killed[0] not in after
        assert killed[0] not in {pid for pid, _, _ in await backend_states(fault_url)}
        async with db.session() as s:
            assert await count_sessions(s) == POOL.size  # the lost transaction's row is not there
    finally:
        await db.dispose()


async def test_connection_lost_at_commit_says_outcome_unknown(fault_url: str) -> None:
    db = Database(fault_url, POOL)

    async def killed_before_commit() -> None:
        async with db.session() as s:
            await create_session(s)
            await terminate_backend(fault_url, await backend_pid(s))
            # The block ends here, so the next thing sent is COMMIT, on a dead connection.

    try:
        with pytest.raises(sessiondb.ConnectionLost, match="during COMMIT, so whether the transaction committed"):
            await killed_before_commit()
        assert db.pool_stats()["checked_out"] == 0
        async with db.session() as s:
            assert await count_sessions(s) == 0
    finally:
        await db.dispose()


@pytest.mark.parametrize("orm_used", [False, True], ids=["functions-only", "orm-too"])
async def test_block_cannot_carry_on_after_losing_its_connection(fault_url: str, orm_used: bool) -> None:
    # A caller that catches the loss and goes on must not end up committing the rest of the block
    # on a fresh connection without the work done before: every later statement fails too.
    db = Database(fault_url, POOL)
    later_errors: list[BaseException] = []

    async def catch_and_carry_on() -> None:
        async with db.session() as s:
            await create_session(s)
            if orm_used:
                await s.execute(text("SELECT 1"))
            [(pid, _, _)] = await backend_states(fault_url)
            await terminate_backend(fault_url, pid)
            with pytest.raises(DBAPIError) as lost:  # typed as ConnectionLost when it leaves the block
                await create_session(s)
            assert lost.value.connection_invalidated
            for later in (create_session(s), s.execute(text("INSERT INTO sessions DEFAULT VALUES"))):
                try:
                    await later
                except Exception as error:
                    later_errors.append(error)

    try:
        with pytest.raises(sessiondb.ConnectionLost):
            await catch_and_carry_on()
        assert len(later_errors) == 2, later_errors
        for error in later_errors:
            assert isinstance(error, sessiondb.ConnectionLost)
            assert "earlier in this db.session() block" in str(error)
        stats = db.pool_stats()
        assert (stats["checked_out"], stats["connections_lost"], stats["connections_opened"]) == (0, 1, 1)
        async with db.session() as s:
            assert await count_sessions(s) == 0
    finally:
        await db.dispose()


@pytest.mark.parametrize("orm_used", [False, True], ids=["functions-only", "orm-too"])
async def test_invalidating_the_session_discards_the_connection_and_later_statements_fail(
    db: Database, database_url: str, orm_used: bool
) -> None:
    # After an ORM statement, s.invalidate() itself used to fail with "This Connection is closed".
    later_errors: list[BaseException] = []
    with pytest.raises(sessiondb.ConnectionLost):
        async with db.session() as s:
            await create_session(s)
            if orm_used:
                await s.execute(text("SELECT 1"))
            await s.invalidate()
            for later in (create_session(s), s.execute(text("INSERT INTO sessions DEFAULT VALUES"))):
                try:
                    await later
                except Exception as error:
                    later_errors.append(error)
    assert [type(error) for error in later_errors] == [sessiondb.ConnectionLost, sessiondb.ConnectionLost]
    stats = db.pool_stats()
    assert (stats["checked_out"], stats["connections_lost"]) == (0, 1)
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 0
