"""The ``Session`` model: plain types, UTC, serialisation and immutability."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import text

import sessiondb
from sessiondb import Database, ImmutableSessionError, PoolSettings, Session, create_session, get_session


def test_core_table_is_the_models_table() -> None:
    assert sessiondb.sessions is Session.__table__
    assert [c.name for c in sessiondb.sessions.columns] == ["id", "created_at"]


async def test_loaded_id_is_plain_uuid_not_asyncpg_subclass(db: Database) -> None:
    async with db.session() as s:
        created = await create_session(s)
    assert type(created.id) is uuid.UUID
    async with db.session() as s:
        s.expunge_all()
        loaded = await get_session(s, created.id)
    assert loaded is not None
    assert type(loaded.id) is uuid.UUID


@pytest.mark.parametrize("server_timezone", ["UTC", "America/New_York", "Asia/Kathmandu"])
async def test_created_at_is_utc_whatever_the_server_timezone(database_url: str, server_timezone: str) -> None:
    db = Database(database_url, PoolSettings(size=1, max_overflow=0))
    try:
        async with db.session() as s:
            await s.execute(text(f"SET TIME ZONE '{server_timezone}'"))
            created = await create_session(s)
            server_now = (await s.execute(text("SELECT now()"))).scalar_one()
        assert created.created_at.tzinfo is UTC
        assert created.created_at.utcoffset() == timedelta(0)
        assert abs(created.created_at - server_now) < timedelta(seconds=5)
    finally:
        await db.dispose()


async def test_to_dict_is_canonical(db: Database) -> None:
    async with db.session() as s:
        created = await create_session(s)
    data = created.to_dict()
    assert set(data) == {"id", "created_at"}
    assert data["id"] == str(created.id)
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", data["id"])
    assert data["created_at"].endswith("+00:00")
    assert datetime.fromisoformat(data["created_at"]) == created.created_at


def test_to_dict_converts_other_offsets_to_utc() -> None:
    s = Session(
        id="6F9619FF-8B86-D011-B42D-00C04FC964FF",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=5, minutes=30))),
    )
    assert s.to_dict() == {"id": "6f9619ff-8b86-d011-b42d-00c04fc964ff", "created_at": "2026-01-01T21:34:05+00:00"}


def test_to_dict_before_flush_raises() -> None:
    with pytest.raises(ValueError, match="flush"):
        Session().to_dict()


@pytest.mark.parametrize("attribute", ["id", "created_at"])
async def test_persisted_session_is_immutable(db: Database, attribute: str) -> None:
    async with db.session() as s:
        created = await create_session(s)
    original = created.to_dict()
    new_value = uuid.uuid4() if attribute == "id" else datetime.now(UTC)
    with pytest.raises(ImmutableSessionError):
        setattr(created, attribute, new_value)
    assert created.to_dict() == original


@pytest.mark.parametrize("attribute", ["id", "created_at"])
async def test_persisted_session_attribute_cannot_be_deleted(db: Database, attribute: str) -> None:
    # `del created.created_at` used to be accepted, leaving None in place of the loaded value.
    async with db.session() as s:
        created = await create_session(s)
        original = created.to_dict()
        with pytest.raises(ImmutableSessionError):
            delattr(created, attribute)
        assert not s.dirty
    assert created.to_dict() == original


@pytest.mark.parametrize("attribute", ["id", "created_at"])
async def test_loaded_session_is_immutable_and_nothing_is_updated(db: Database, attribute: str) -> None:
    async with db.session() as s:
        created = await create_session(s)
    async with db.session() as s:
        s.expunge_all()
        loaded = await get_session(s, created.id)
        assert loaded is not None
        new_value = uuid.uuid4() if attribute == "id" else datetime.now(UTC)
        with pytest.raises(ImmutableSessionError):
            setattr(loaded, attribute, new_value)
        assert not s.dirty
    async with db.session() as s:
        again = await get_session(s, created.id)
        assert again is not None and again.to_dict() == created.to_dict()


def test_immutable_error_is_an_attribute_error() -> None:
    assert issubclass(ImmutableSessionError, AttributeError)
    assert issubclass(ImmutableSessionError, sessiondb.SessionDBError)


def test_transient_session_validates_assignments() -> None:
    with pytest.raises(sessiondb.InvalidSessionId):
        Session(id="not-a-uuid")
    with pytest.raises(ValueError, match="timezone-aware"):
        Session(created_at=datetime(2026, 1, 1))
