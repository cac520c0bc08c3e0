"""Test base: one throwaway PostgreSQL per run, a migrated template, and a fresh database per test.

Set ``SESSIONDB_TEST_DATABASE_URL`` (a role allowed to CREATE DATABASE) to use an existing server
instead of the embedded one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from pytest_postgresql.janitor import DatabaseJanitor
from sqlalchemy.engine import URL, make_url

from sessiondb import Database, PoolSettings, apply_migrations
from sessiondb.embedded import EmbeddedServer, embedded_postgres
from sessiondb.pgbouncer import RunningPgBouncer, find_pgbouncer, run_pgbouncer

TEMPLATE_DB = "sessiondb_template"


@dataclass(frozen=True)
class PgServer:
    """Where the suite's server is, plus the embedded handle when we started it ourselves."""

    url: URL
    embedded: EmbeddedServer | None

    @property
    def host(self) -> str:
        host = self.url.host or self.url.query.get("host") or "localhost"
        assert isinstance(host, str)
        return host

    @property
    def port(self) -> int:
        return int(self.url.port or self.url.query.get("port") or 5432)  # type: ignore[arg-type]

    def url_for(self, dbname: str) -> str:
        return self.url.set(database=dbname).render_as_string(hide_password=False)

    def janitor(self, dbname: str, template: str | None = None, *, as_template: bool = False) -> DatabaseJanitor:
        return DatabaseJanitor(
            user=self.url.username or "postgres",
            password=self.url.password,
            host=self.host,
            port=self.port,
            dbname=dbname,
            template_dbname=template,
            as_template=as_template,
        )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    external = os.environ.get("SESSIONDB_TEST_DATABASE_URL", "").strip()
    if external:
        yield PgServer(make_url(external), None)
        return
    with embedded_postgres(durable=False) as server:
        yield PgServer(make_url(server.url), server)


@pytest.fixture(scope="session")
def migrated_template(pg_server: PgServer) -> Iterator[str]:
    """A database with every migration applied, cloned for each test."""
    janitor = pg_server.janitor(TEMPLATE_DB)
    janitor.drop()
    with janitor:
        apply_migrations(pg_server.url_for(TEMPLATE_DB))
        yield TEMPLATE_DB


@pytest.fixture
def empty_database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with no migrations applied."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_server.janitor(name):
        yield pg_server.url_for(name)


@pytest.fixture
def database_url(pg_server: PgServer, migrated_template: str) -> Iterator[str]:
    """A fresh, fully migrated database for this test alone."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with pg_server.janitor(name, template=migrated_template):
        yield pg_server.url_for(name)


@pytest.fixture
def pool_settings() -> PoolSettings:
    return PoolSettings(size=2, max_overflow=0, timeout=5.0)


@pytest.fixture
async def db(database_url: str, pool_settings: PoolSettings) -> AsyncIterator[Database]:
    """A Database on this test's own database, created on the test's own event loop."""
    database = Database(database_url, pool_settings)
    try:
        yield database
    finally:
        await database.dispose()


@contextlib.contextmanager
def transaction_mode_pgbouncer(server: PgServer, *, default_pool_size: int) -> Iterator[RunningPgBouncer]:
    """A throwaway PgBouncer in transaction mode in front of ``server``.

    Without the ``pgbouncer`` binary: a failure in CI (``CI=true``, where ``.ci/run`` installs it),
    a skip elsewhere.
    """
    if find_pgbouncer() is None:
        reason = "pgbouncer is not installed (apt-get install pgbouncer); .ci/run installs it"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    run_as = server.embedded.handle.system_user if server.embedded is not None else None
    with run_pgbouncer(
        server.url, pool_mode="transaction", default_pool_size=default_pool_size, run_as=run_as
    ) as bouncer:
        yield bouncer
