"""``db.session()`` and ``get_db``: commit on success, rollback on error, connection always returned."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import object_session

import sessiondb.database
from sessiondb import Database, Session, count_sessions, create_session, delete_session, get_session
from tests.helpers import fetch, fetchval


class Boom(Exception):
    pass


async def test_successful_block_commits(db: Database, database_url: str) -> None:
    async with db.session() as s:
        created = await create_session(s)
    assert await fetchval(database_url, "SELECT count(*) FROM sessions WHERE id = $1", created.id) == 1
    assert db.pool_stats()["checked_out"] == 0


async def test_raising_block_rolls_back_and_reraises(db: Database, database_url: str) -> None:
    baseline = db.pool_stats()["checked_out"]
    with pytest.raises(Boom):
        async with db.session() as s:
            await create_session(s)
            await s.flush()
            raise Boom
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 0
    assert db.pool_stats()["checked_out"] == baseline


async def test_database_error_rolls_back_everything_in_the_block(db: Database, database_url: str) -> None:
    async with db.session() as s:
        existing = await create_session(s)
    with pytest.raises(Exception, match="duplicate key"):
        async with db.session() as s:
            await create_session(s)
            await s.execute(text("INSERT INTO sessions (id) VALUES (:id)"), {"id": existing.id})
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 1
    assert db.pool_stats()["checked_out"] == 0


async def test_connection_is_reused_not_reopened(db: Database) -> None:
    for _ in range(10):
        async with db.session() as s:
            await create_session(s)
    stats = db.pool_stats()
    assert stats["checked_out"] == 0
    assert stats["checkouts"] == 10
    assert stats["connections_opened"] == 1


async def test_attributes_readable_after_commit_without_io(db: Database) -> None:
    # expire_on_commit=False: a lazy refresh here would raise MissingGreenlet.
    async with db.session() as s:
        created = await create_session(s)
    assert created.to_dict()["id"] == str(created.id)


async def test_get_db_commits_and_returns_connection(db: Database, database_url: str) -> None:
    dependency = db.get_db()
    s = await anext(dependency)
    await create_session(s)
    assert db.pool_stats()["checked_out"] == 1
    with pytest.raises(StopAsyncIteration):
        await anext(dependency)
    assert db.pool_stats()["checked_out"] == 0
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 1


async def test_get_db_rolls_back_when_the_handler_raises(db: Database, database_url: str) -> None:
    dependency = db.get_db()
    s = await anext(dependency)
    await create_session(s)
    await s.flush()
    with pytest.raises(Boom):
        await dependency.athrow(Boom())
    assert db.pool_stats()["checked_out"] == 0
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 0


async def test_module_get_db_uses_database_url_lazily(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessiondb.database, "_default_database", None)
    monkeypatch.setenv("DATABASE_URL", database_url)
    assert sessiondb.database._default_database is None  # nothing created at import or setenv
    async for s in sessiondb.database.get_db():
        created = await create_session(s)
    default = sessiondb.database._default_database
    assert default is not None
    try:
        async with default.session() as s:
            assert await get_session(s, created.id) is not None
            assert await count_sessions(s) == 1
    finally:
        await default.dispose()
        monkeypatch.setattr(sessiondb.database, "_default_database", None)


async def test_dispose_closes_pooled_connections(db: Database, database_url: str) -> None:
    async with db.session() as s:
        await create_session(s)
    app_name = db.pool_settings.application_name
    query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()"
    assert await fetchval(database_url, query, app_name) == 1
    await db.dispose()
    assert await fetchval(database_url, query, app_name) == 0
    async with db.session() as s:  # usable again after dispose
        assert await count_sessions(s) == 1


async def test_commit_inside_the_block_then_error_keeps_only_the_committed_row(db: Database, database_url: str) -> None:
    # The statements reuse the connection remembered at checkout; after the caller's own commit that
    # connection is back in the pool, so the next statement must run in a new transaction of the
    # session, which the error then rolls back.
    with pytest.raises(Boom):
        async with db.session() as s:
            first_id = (await create_session(s)).id
            await s.commit()
            second_id = (await create_session(s)).id
            raise Boom
    ids = {row["id"] for row in await fetch(database_url, "SELECT id FROM sessions")}
    assert ids == {first_id}
    assert second_id not in ids
    assert db.pool_stats()["checked_out"] == 0


async def test_rollback_inside_the_block_then_more_work_commits_the_later_rows(db: Database, database_url: str) -> None:
    async with db.session() as s:
        discarded_id = (await create_session(s)).id
        await s.rollback()
        kept_id = (await create_session(s)).id
    ids = {row["id"] for row in await fetch(database_url, "SELECT id FROM sessions")}
    assert ids == {kept_id}
    assert discarded_id not in ids
    assert db.pool_stats()["checked_out"] == 0


async def test_orm_statements_and_session_functions_share_one_transaction(db: Database, database_url: str) -> None:
    with pytest.raises(Boom):
        async with db.session() as s:
            await create_session(s)
            await s.execute(text("INSERT INTO sessions DEFAULT VALUES"))
            await create_session(s)
            raise Boom
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 0


async def test_close_inside_the_block_discards_the_session_functions_work(db: Database, database_url: str) -> None:
    # AsyncSession.close() rolls back; statements sent straight to the driver must go with it, and
    # the session stays usable on the same checkout for what follows.
    async with db.session() as s:
        discarded_id = (await create_session(s)).id
        await s.close()
        kept_id = (await create_session(s)).id
    ids = {row["id"] for row in await fetch(database_url, "SELECT id FROM sessions")}
    assert ids == {kept_id}
    assert discarded_id not in ids
    stats = db.pool_stats()
    assert (stats["checked_out"], stats["checkouts"]) == (0, 1)


async def test_block_is_in_a_transaction_from_the_start(db: Database, database_url: str) -> None:
    async with db.session() as s:
        assert s.in_transaction()
        query = "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1"
        states = await fetch(database_url, query, db.pool_settings.application_name)
        assert [row["state"] for row in states] == ["idle in transaction"]
    assert not s.in_transaction()


async def test_orm_statement_then_session_function_then_orm_commit(db: Database, database_url: str) -> None:
    # The ORM opens its transaction on the unit's connection first; create_session joins it, and
    # the caller's own commit through the ORM commits both.
    with pytest.raises(Boom):
        async with db.session() as s:
            await s.execute(text("INSERT INTO sessions DEFAULT VALUES"))
            await create_session(s)
            await s.commit()
            await create_session(s)  # after the commit: a new transaction, rolled back by the error
            raise Boom
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 2
    assert db.pool_stats()["checked_out"] == 0


async def test_sessions_not_made_by_db_session_still_work(db: Database, database_url: str) -> None:
    # db.sessionmaker() (and any AsyncSession on the engine) has no unit of work: the functions
    # then use the session's own connection and transaction.
    async with db.sessionmaker() as s:
        created = await create_session(s)
        assert await get_session(s, created.id) is created
        await s.commit()
    async with AsyncSession(db.engine) as plain:
        assert await delete_session(plain, created.id)
        await plain.rollback()
    assert await fetchval(database_url, "SELECT count(*) FROM sessions WHERE id = $1", created.id) == 1
    assert db.pool_stats()["checked_out"] == 0


async def test_rows_of_a_rolled_back_transaction_leave_the_session(db: Database) -> None:
    # get_session must not answer from the identity map for a row whose INSERT was rolled back.
    async with db.session() as s:
        created = await create_session(s)
        assert created in s
        assert await get_session(s, created.id) is created  # same transaction: the same object
        await s.rollback()
        assert created not in s
        assert await get_session(s, created.id) is None
        assert created.to_dict()["id"] == str(created.id)  # still readable: detached, not expired
    assert db.pool_stats()["checked_out"] == 0


@pytest.mark.parametrize("orm_used", [False, True], ids=["functions-only", "orm-loaded-too"])
async def test_rows_are_detached_after_the_block_and_can_join_another_session(db: Database, orm_used: bool) -> None:
    async with db.session() as s:
        earlier_id = (await create_session(s)).id
    async with db.session() as s:
        rows = [await create_session(s)]
        if orm_used:  # an object the ORM loaded itself: the block's end closes the session the ORM's way
            loaded = await s.get(Session, earlier_id)
            assert loaded is not None
            rows.append(loaded)
    for row in rows:
        assert inspect(row).detached and object_session(row) is None
    async with db.session() as other:
        for row in rows:
            other.add(row)  # "already attached to session ..." if the first block had not let it go
            assert await get_session(other, row.id) is row
