"""``sessiondb bench`` and ``db.fast`` through a real PgBouncer in transaction pooling mode.

Needs the ``pgbouncer`` binary: in CI (``CI=true``) its absence fails these tests, elsewhere it
skips them (as in test_pgbouncer.py).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PgServer, transaction_mode_pgbouncer

from sessiondb import Database, PoolSettings
from sessiondb.bench import CONFIG_NAMES, PGBENCH, find_pgbench
from sessiondb.pgbouncer import RunningPgBouncer
from tests.test_bench import bench


@pytest.fixture(scope="module")
def pgbouncer(pg_server: PgServer) -> Iterator[RunningPgBouncer]:
    with transaction_mode_pgbouncer(pg_server, default_pool_size=2) as bouncer:
        yield bouncer


@pytest.fixture
def bouncer_url(pgbouncer: RunningPgBouncer, database_url: str) -> str:
    return pgbouncer.url_for(database_url.rsplit("/", 1)[-1].split("?", 1)[0])


def test_bench_runs_every_configuration_through_pgbouncer(bouncer_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bouncer.json"
    result = bench("--database-url", bouncer_url, "--concurrency", "4", "--ops", "12", "--rounds", "1",
                   "--json", str(out), env={"SESSIONDB_PGBOUNCER": "1"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())
    expected = set(CONFIG_NAMES) if find_pgbench() else set(CONFIG_NAMES) - {PGBENCH}
    assert {r["name"] for r in runs} == expected
    assert all(r["pgbouncer"] is True and r["server_commits"] >= 2 * r["ops"] for r in runs), runs
    assert "pgbouncer=True" in result.stdout


async def test_fast_path_through_pgbouncer_from_many_clients(bouncer_url: str) -> None:
    # Several client connections share 2 server connections: named prepared statements would collide.
    db = Database(bouncer_url, PoolSettings(size=8, max_overflow=0, pgbouncer=True))
    try:

        async def churn() -> None:
            for _ in range(10):
                created = await db.fast.create_session()
                assert await db.fast.get_session(created.id) == created
                assert await db.fast.delete_session(created.id) is True

        await asyncio.gather(*(churn() for _ in range(8)))
        assert db.pool_stats()["checked_out"] == 0
    finally:
        await db.dispose()
