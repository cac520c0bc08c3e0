"""Every core path through a real PgBouncer in transaction pooling mode.

``PoolSettings(pgbouncer=True)`` must give zero errors; the default settings must fail there (named
prepared statements cached per client connection collide on shared server connections), which
proves the setting necessary. Needs the ``pgbouncer`` binary: in CI (``CI=true``) its absence fails
these tests, elsewhere it skips them.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from conftest import PgServer, transaction_mode_pgbouncer

from sessiondb import (
    Database,
    PoolSettings,
    count_sessions,
    create_session,
    delete_session,
    get_session,
)
from sessiondb.pgbouncer import RunningPgBouncer
from sessiondb.urls import asyncpg_dsn

WORKERS = 8
ROUNDS = 15


@pytest.fixture(scope="module")
def pgbouncer(pg_server: PgServer) -> Iterator[RunningPgBouncer]:
    # Two server connections for up to WORKERS client connections: transactions from different
    # clients keep landing on the same server connection, as in production.
    with transaction_mode_pgbouncer(pg_server, default_pool_size=2) as bouncer:
        yield bouncer


@pytest.fixture
def bouncer_url(pgbouncer: RunningPgBouncer, database_url: str) -> str:
    """This test's own migrated database, reached through PgBouncer."""
    dbname = database_url.rsplit("/", 1)[-1].split("?", 1)[0]
    return pgbouncer.url_for(dbname)


async def core_paths(db: Database) -> None:
    """create / get / delete / count, each in its own transaction, as a request handler would."""
    async with db.session() as s:
        created = await create_session(s)
    async with db.session() as s:
        found = await get_session(s, str(created.id))
        assert found is not None
        assert found.id == created.id
    async with db.session() as s:
        assert await count_sessions(s) >= 1
        assert await delete_session(s, created.id)
    async with db.session() as s:
        assert await get_session(s, created.id) is None
        assert not await delete_session(s, uuid.uuid4())


async def churn(db: Database) -> list[BaseException]:
    """WORKERS tasks running the core paths ROUNDS times; the first error each of them hit."""
    errors: list[BaseException] = []

    async def worker() -> None:
        for _ in range(ROUNDS):
            try:
                await core_paths(db)
            except Exception as error:
                errors.append(error)
                return  # one is enough to fail; carrying on through a broken setup only costs time

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return errors


async def test_core_paths_through_pgbouncer_with_setting(bouncer_url: str) -> None:
    db = Database(bouncer_url, PoolSettings(pgbouncer=True, size=2, max_overflow=0))
    try:
        for _ in range(5):  # repeated: statements run again on (possibly) other server connections
            await core_paths(db)
        async with db.session() as s:
            assert await count_sessions(s) == 0
    finally:
        await db.dispose()


async def test_concurrent_churn_through_pgbouncer_with_setting(bouncer_url: str) -> None:
    db = Database(bouncer_url, PoolSettings(pgbouncer=True, size=WORKERS, max_overflow=0))
    try:
        errors = await churn(db)
        assert errors == []
        async with db.session() as s:
            assert await count_sessions(s) == 0
        assert db.pool_stats()["connections_lost"] == 0
    finally:
        await db.dispose()


def test_pgbouncer_setting_from_environment_is_honoured(bouncer_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSIONDB_PGBOUNCER", "1")
    monkeypatch.setenv("DATABASE_URL", bouncer_url)
    db = Database.from_env()
    assert db.pool_settings.pgbouncer

    async def run() -> list[BaseException]:
        try:
            return await churn(db)
        finally:
            await db.dispose()

    assert asyncio.run(run()) == []


async def test_default_settings_fail_through_pgbouncer(bouncer_url: str) -> None:
    # Proves the setting necessary: asyncpg's named, cached prepared statements do not survive
    # transaction pooling ("prepared statement ... already exists" / "... does not exist").
    db = Database(bouncer_url, PoolSettings(size=WORKERS, max_overflow=0))
    try:
        errors = await churn(db)
    finally:
        await db.dispose()
    assert errors, "the default settings unexpectedly worked through PgBouncer in transaction mode"
    assert any("prepared statement" in str(e) for e in errors), errors[:3]


def test_pgbouncer_setting_turns_off_both_statement_caches() -> None:
    # Runs without pgbouncer: what Database hands asyncpg and the SQLAlchemy dialect.
    settings = PoolSettings(pgbouncer=True, statement_cache_size=500)
    assert settings.effective_statement_cache_size == 0
    db = Database("postgresql://app@db.invalid/app", settings)
    args = db._connect_args(settings)
    assert args["statement_cache_size"] == 0
    assert args["prepared_statement_cache_size"] == 0
    assert PoolSettings().effective_statement_cache_size == PoolSettings().statement_cache_size


def test_cli_purge_through_pgbouncer_honours_the_setting(bouncer_url: str, database_url: str) -> None:
    # `sessiondb purge` from cron behind PgBouncer: each run is a new process whose prepared statement
    # names (asyncpg numbers them per process) collide with those earlier runs left on the shared
    # server connections, unless SESSIONDB_PGBOUNCER=1 reaches the purge's pool.
    async def seed() -> None:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            await conn.execute(
                "INSERT INTO sessions (created_at) SELECT now() - interval '40 days' FROM generate_series(1, 90)"
            )
        finally:
            await conn.close()

    asyncio.run(seed())
    command = [sys.executable, "-m", "sessiondb.cli", "purge", "--older-than", "30d", "--batch-size", "10"]
    environment = {**os.environ, "SESSIONDB_PGBOUNCER": "1", "DATABASE_URL": bouncer_url}
    outputs = []
    for _ in range(3):
        run = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)
        assert (run.returncode, run.stderr) == (0, "")
        outputs.append(run.stdout.split(" session(s)")[0])
    assert outputs == ["deleted 90", "deleted 0", "deleted 0"]
