"""create/get/delete/count_sessions: behaviour, idempotence and input validation before SQL."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, inspect, select

from sessiondb import (
    Database,
    InvalidSessionId,
    Session,
    count_sessions,
    create_session,
    delete_session,
    get_session,
)
from tests.helpers import StatementLog, fetchval


async def test_create_returns_persisted_session_with_server_values(db: Database, database_url: str) -> None:
    async with db.session() as s:
        created = await create_session(s)
        assert isinstance(created, Session)
        assert created in s
    stored = await fetchval(database_url, "SELECT created_at FROM sessions WHERE id = $1", created.id)
    assert stored == created.created_at


async def test_create_makes_distinct_ids(db: Database) -> None:
    async with db.session() as s:
        ids = {(await create_session(s)).id for _ in range(20)}
        assert len(ids) == 20
        assert await count_sessions(s) == 20


@pytest.mark.parametrize("spelling", [str, lambda u: str(u).upper(), lambda u: u])
async def test_get_accepts_uuid_and_canonical_strings(db: Database, spelling: object) -> None:
    async with db.session() as s:
        created = await create_session(s)
    async with db.session() as s:
        s.expunge_all()
        found = await get_session(s, spelling(created.id))  # type: ignore[operator]
    assert found is not None
    assert found.to_dict() == created.to_dict()


async def test_get_missing_returns_none(db: Database) -> None:
    async with db.session() as s:
        assert await get_session(s, uuid.uuid4()) is None


async def test_delete_is_idempotent(db: Database, database_url: str) -> None:
    async with db.session() as s:
        created = await create_session(s)
    async with db.session() as s:
        assert await delete_session(s, created.id) is True
    async with db.session() as s:
        assert await delete_session(s, created.id) is False
        assert await delete_session(s, str(created.id)) is False
    assert await fetchval(database_url, "SELECT count(*) FROM sessions") == 0


async def test_delete_only_removes_the_named_session(db: Database) -> None:
    async with db.session() as s:
        keep = await create_session(s)
        drop = await create_session(s)
    async with db.session() as s:
        assert await delete_session(s, drop.id)
        assert await count_sessions(s) == 1
        assert await get_session(s, keep.id) is not None


async def test_get_after_delete_in_same_transaction_is_none(db: Database) -> None:
    async with db.session() as s:
        created = await create_session(s)
        assert await delete_session(s, created.id)
        assert await get_session(s, created.id) is None


async def test_count_sessions_counts_committed_rows(db: Database) -> None:
    async with db.session() as s:
        assert await count_sessions(s) == 0
        for _ in range(3):
            await create_session(s)
    async with db.session() as s:
        assert await count_sessions(s) == 3


INVALID_IDS = [
    "",
    "not-a-uuid",
    "6f9619ff8b86d011b42d00c04fc964ff",  # no hyphens
    "{6f9619ff-8b86-d011-b42d-00c04fc964ff}",
    "urn:uuid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
    " 6f9619ff-8b86-d011-b42d-00c04fc964ff",
    "6f9619ff-8b86-d011-b42d-00c04fc964ff\n",
    "6f9619ff-8b86-d011-b42d-00c04fc964fg",
    "6f9619ff-8b86-d011-b42d-00c04fc964f\x00",
    "x" * 1_000_000,
    "\uff16f9619ff-8b86-d011-b42d-00c04fc964ff",  # fullwidth digit six
    None,
    123,
    b"6f9619ff-8b86-d011-b42d-00c04fc964ff",
    ["6f9619ff-8b86-d011-b42d-00c04fc964ff"],
]


@pytest.mark.parametrize("bad_id", INVALID_IDS, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize("operation", [get_session, delete_session])
async def test_invalid_id_raises_before_any_sql(db: Database, bad_id: object, operation: object) -> None:
    async with db.session() as s:
        await create_session(s)
    log = StatementLog(db)
    async with db.session() as s:
        with pytest.raises(InvalidSessionId) as raised:
            await operation(s, bad_id)  # type: ignore[operator]
        assert await log.sent() == []
        assert await count_sessions(s) == 1
    assert isinstance(raised.value, ValueError)
    assert len(str(raised.value)) < 200


async def test_operations_reject_something_that_is_not_an_async_session() -> None:
    with pytest.raises(TypeError, match="AsyncSession"):
        await create_session(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("orm_first", [False, True], ids=["functions-first", "orm-first"])
async def test_created_and_read_rows_are_the_orms_own_objects_without_sql(db: Database, orm_first: bool) -> None:
    # Whichever side of the session is used first, a row the functions returned is the object the ORM
    # hands out for that identity, and asking again sends no SQL.
    async with db.session() as s:
        earlier = await create_session(s)
    async with db.session() as s:
        if orm_first:
            await s.execute(select(func.count()).select_from(Session))
        created = await create_session(s)
        read = await get_session(s, earlier.id)
        assert read is not None
        log = StatementLog(db)
        try:
            assert await get_session(s, created.id) is created
            assert await get_session(s, str(read.id).upper()) is read
            assert await s.get(Session, created.id) is created
            assert await s.get(Session, read.id) is read
            assert await log.sent() == []
        finally:
            log.remove()
        assert created in s and read in s
        assert inspect(created).persistent and inspect(read).persistent
