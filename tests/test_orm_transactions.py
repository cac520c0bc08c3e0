"""SQLAlchemy's own transaction controls inside ``db.session()``: they cover the session functions.

``db.session()`` runs the session functions on its unit of work until the block uses the ORM
(sessiondb/unit.py). Each test here runs the same block on ``db.session()`` and on a plain
``AsyncSession`` from ``db.sessionmaker()`` (committed on success, rolled back on error, as
``db.session()`` does), so the expected outcome is SQLAlchemy's own, not one we chose.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from sessiondb import Database, Session, create_session, delete_session, get_session
from tests.helpers import fetchval

OpenSession = Callable[[], contextlib.AbstractAsyncContextManager[AsyncSession]]


class Boom(Exception):
    pass


@pytest.fixture(params=["db.session", "plain-AsyncSession"])
def open_session(request: pytest.FixtureRequest, db: Database) -> OpenSession:
    if request.param == "db.session":
        return db.session

    @contextlib.asynccontextmanager
    async def plain() -> AsyncIterator[AsyncSession]:
        async with db.sessionmaker() as s:
            try:
                yield s
            except BaseException:
                await s.rollback()
                raise
            await s.commit()

    return plain


async def _count(database_url: str) -> int:
    return int(await fetchval(database_url, "SELECT count(*) FROM sessions"))


async def test_rolled_back_savepoint_undoes_create_session(
    open_session: OpenSession, db: Database, database_url: str
) -> None:
    async with open_session() as s:
        kept = await create_session(s)
        with contextlib.suppress(Boom):
            async with s.begin_nested():
                undone = await create_session(s)
                raise Boom
        # Out of the session too, as an object the ORM inserted in the savepoint would be (it was kept).
        assert undone not in s
        assert await get_session(s, undone.id) is None
        assert await get_session(s, kept.id) is kept
    ids = {await fetchval(database_url, "SELECT id FROM sessions")}
    assert ids == {kept.id}
    assert db.pool_stats()["checked_out"] == 0


async def test_rolled_back_savepoint_first_in_the_block_undoes_create_session(
    open_session: OpenSession, database_url: str
) -> None:
    async with open_session() as s:
        with contextlib.suppress(Boom):
            async with s.begin_nested():
                await create_session(s)
                raise Boom
    assert await _count(database_url) == 0


async def test_rolled_back_savepoint_undoes_delete_session(open_session: OpenSession, database_url: str) -> None:
    async with open_session() as s:
        created = await create_session(s)
    async with open_session() as s:
        await s.execute(select(1))  # the ORM side in use before the savepoint
        savepoint = await s.begin_nested()
        assert await delete_session(s, created.id)
        await savepoint.rollback()
    assert await fetchval(database_url, "SELECT count(*) FROM sessions WHERE id = $1", created.id) == 1


async def test_released_savepoint_keeps_create_session(open_session: OpenSession, database_url: str) -> None:
    async with open_session() as s, s.begin_nested():
        await create_session(s)
    assert await _count(database_url) == 1


async def test_begin_block_that_raises_rolls_back_create_session(open_session: OpenSession, database_url: str) -> None:
    async with open_session() as s:
        with contextlib.suppress(Boom):
            async with s.begin():
                await create_session(s)
                raise Boom
    assert await _count(database_url) == 0


async def test_begin_block_commits_create_session_when_it_exits(open_session: OpenSession, database_url: str) -> None:
    with pytest.raises(Boom):
        async with open_session() as s:
            async with s.begin():
                committed = await create_session(s)
            raise Boom  # after s.begin() committed: only later work is rolled back
    assert await fetchval(database_url, "SELECT id FROM sessions") == committed.id


async def test_begin_after_create_session_is_refused(open_session: OpenSession, database_url: str) -> None:
    # create_session began the session's transaction, so a second begin() is an error, not a way
    # to commit half the block.
    with pytest.raises(sa_exc.InvalidRequestError, match="already begun"):
        async with open_session() as s:
            await create_session(s)
            await s.begin()
    assert await _count(database_url) == 0


async def test_commit_through_run_sync_commits_create_session(open_session: OpenSession, database_url: str) -> None:
    with pytest.raises(Boom):
        async with open_session() as s:
            committed_id = (await create_session(s)).id
            await s.run_sync(lambda sync_session: sync_session.commit())
            await create_session(s)
            raise Boom
    assert await fetchval(database_url, "SELECT id FROM sessions") == committed_id


async def test_isolation_level_asked_after_create_session_keeps_its_row(
    open_session: OpenSession, database_url: str
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with open_session() as s:
            await create_session(s)
            await s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            assert await s.scalar(select(func.count()).select_from(Session)) == 1
    assert await _count(database_url) == 1
    assert any("execution_options" in str(w.message) for w in caught)  # SQLAlchemy ignores it, and says so


@pytest.mark.parametrize(
    ("option", "setting", "shown"),
    [
        ("isolation_level", "REPEATABLE READ", ("transaction_isolation", "repeatable read")),
        ("postgresql_readonly", True, ("transaction_read_only", "on")),
        ("postgresql_deferrable", True, ("transaction_deferrable", "on")),
    ],
)
async def test_transaction_characteristics_asked_first_apply(
    open_session: OpenSession, db: Database, option: str, setting: Any, shown: tuple[str, str]
) -> None:
    name, expected = shown
    async with open_session() as s:
        await s.connection(execution_options={option: setting})
        assert await s.scalar(text(f"SHOW {name}")) == expected
    # The pool hands the connection on with the server's defaults again.
    async with db.session() as s:
        assert await s.scalar(text("SHOW transaction_isolation")) == "read committed"
        assert await s.scalar(text("SHOW transaction_read_only")) == "off"
        assert await s.scalar(text("SHOW transaction_deferrable")) == "off"


async def test_read_only_block_refuses_create_session(open_session: OpenSession, database_url: str) -> None:
    with pytest.raises(Exception, match="read-only transaction"):
        async with open_session() as s:
            await s.connection(execution_options={"postgresql_readonly": True})
            await create_session(s)
    assert await _count(database_url) == 0


async def test_added_object_is_flushed_before_a_query(open_session: OpenSession, database_url: str) -> None:
    async with open_session() as s:
        await create_session(s)
        s.add(Session())
        assert await s.scalar(select(func.count()).select_from(Session)) == 2  # autoflush, as by default
    assert await _count(database_url) == 2


@pytest.mark.parametrize(
    ("option", "setting"),
    [("isolation_level", "SERIALIZABLE"), ("postgresql_readonly", True), ("isolation_level", "AUTOCOMMIT")],
)
@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
async def test_execution_options_last_one_transaction(
    open_session: OpenSession, database_url: str, option: str, setting: Any, end: str
) -> None:
    # They stayed on the unit's connection for the rest of the block: with AUTOCOMMIT a later
    # create_session committed although the block then raised.
    with pytest.raises(Boom):
        async with open_session() as s:
            await s.connection(execution_options={option: setting})
            await s.execute(select(1))
            await getattr(s, end)()
            assert await s.scalar(text("SHOW transaction_isolation")) == "read committed"
            assert await s.scalar(text("SHOW transaction_read_only")) == "off"
            await create_session(s)
            raise Boom
    assert await _count(database_url) == 0


async def test_connection_with_options_is_closed_once_its_transaction_ends(open_session: OpenSession) -> None:
    # It stayed usable on the unit's pooled connection, outside the ORM's transaction: used before the
    # next ORM statement, it kept SERIALIZABLE for that statement too.
    async with open_session() as s:
        held = await s.connection(execution_options={"isolation_level": "SERIALIZABLE"})
        await s.commit()
        with pytest.raises(sa_exc.ResourceClosedError):
            await held.scalar(select(1))
        assert await s.scalar(text("SHOW transaction_isolation")) == "read committed"
