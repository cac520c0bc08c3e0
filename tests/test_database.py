"""Constructing a Database: URL schemes, environment, settings and pool statistics."""

from __future__ import annotations

import pytest

from sessiondb import ConfigurationError, Database, DatabaseUnavailable, PoolSettings, count_sessions
from sessiondb.urls import parse_database_url


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+asyncpg"])
async def test_accepted_url_schemes_connect(database_url: str, scheme: str) -> None:
    url = parse_database_url(database_url).set(drivername=scheme)
    db = Database(url.render_as_string(hide_password=False), PoolSettings(size=1, max_overflow=0))
    try:
        async with db.session() as s:
            assert await count_sessions(s) == 0
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u:p@h/db",
        "postgresql+psycopg2://u@h/db",
        "sqlite:///x.db",
        "",
        "   ",
        "not a url",
        "postgresql://h:99999x/db",
    ],
)
def test_unsupported_urls_raise_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        Database(url)


def test_configuration_error_never_shows_the_password() -> None:
    with pytest.raises(ConfigurationError) as raised:
        Database("mysql://user:hunter2@db.example:3306/app")
    assert "hunter2" not in str(raised.value)


def test_repr_hides_password() -> None:
    db = Database("postgresql://user:hunter2@db.example:5432/app")
    assert "hunter2" not in repr(db)


async def test_unreachable_server_names_host_and_port_not_password() -> None:
    db = Database(
        "postgresql://user:hunter2@127.0.0.1:1/app", PoolSettings(size=1, max_overflow=0, connect_timeout=2.0)
    )
    try:
        with pytest.raises(DatabaseUnavailable) as raised:
            async with db.session():
                pass
    finally:
        await db.dispose()
    message = str(raised.value)
    assert "127.0.0.1:1" in message
    assert "hunter2" not in message
    assert db.pool_stats()["checked_out"] == 0


def test_from_env_requires_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DATABASE_URL"):
        Database.from_env()


def test_from_env_reads_url_and_pool_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://u@db.example/app")
    monkeypatch.setenv("SESSIONDB_POOL_SIZE", "7")
    monkeypatch.setenv("SESSIONDB_POOL_MAX_OVERFLOW", "0")
    db = Database.from_env()
    assert db.pool_settings.size == 7
    assert db.pool_settings.max_overflow == 0
    assert db.engine.sync_engine.pool.size() == 7  # type: ignore[attr-defined]
    assert db.url.drivername == "postgresql+asyncpg"


def test_pool_must_be_pool_settings() -> None:
    with pytest.raises(TypeError):
        Database("postgresql://u@h/db", pool={"size": 3})  # type: ignore[arg-type]


async def test_pool_stats_has_documented_keys(db: Database) -> None:
    stats = db.pool_stats()
    assert {"size", "checked_out", "overflow", "connections_opened", "checkouts"} <= set(stats)
    assert stats["size"] == db.pool_settings.size
    assert stats["checked_out"] == 0
    assert stats["connections_opened"] == 0
    async with db.session():
        during = db.pool_stats()
    assert during["checked_out"] == 1
    assert during["checkouts"] == 1
    assert during["connections_opened"] == 1


async def test_overflow_is_counted_while_in_use(database_url: str) -> None:
    db = Database(database_url, PoolSettings(size=1, max_overflow=2))
    try:
        async with db.session(), db.session(), db.session():
            stats = db.pool_stats()
            assert stats["checked_out"] == 3
            assert stats["overflow"] == 2
        assert db.pool_stats()["checked_out"] == 0
    finally:
        await db.dispose()


async def test_application_name_reaches_the_server(database_url: str) -> None:
    from sqlalchemy import text

    db = Database(database_url, PoolSettings(size=1, max_overflow=0, application_name="svc-checkout"))
    try:
        async with db.session() as s:
            assert (await s.execute(text("SHOW application_name"))).scalar_one() == "svc-checkout"
    finally:
        await db.dispose()


@pytest.mark.parametrize(
    ("url", "described"),
    [
        ("postgresql://u:hunter2@db.example:6543/app", "db.example:6543/app"),
        ("postgresql://u:hunter2@db.example/app", "db.example:5432/app"),
        # A socket directory names the socket file, so its port does not read as a TCP port.
        ("postgresql://u:hunter2@/app?host=/run/postgresql", "/run/postgresql/.s.PGSQL.5432/app"),
        ("postgresql://u:hunter2@/app?host=/tmp/pg/&port=5433", "/tmp/pg/.s.PGSQL.5433/app"),
    ],
)
def test_server_description_names_host_and_port_or_socket(url: str, described: str) -> None:
    assert Database(url).server == described
