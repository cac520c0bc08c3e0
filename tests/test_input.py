"""Bad input gets a typed error from sessiondb before any SQL is sent, and nothing is written.

Bad URLs and unreachable servers give one clear error naming host and port, never the password.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import JSON, Text, bindparam, insert, literal, select, text
from sqlalchemy.exc import StatementError
from sqlalchemy.types import TypeDecorator

import sessiondb
from sessiondb import (
    Database,
    PoolSettings,
    Session,
    count_sessions,
    create_session,
    delete_session,
    get_session,
    sessions,
)
from tests.helpers import StatementLog

GOOD_ID = "0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c00"
BAD_ID_STRINGS = [
    "",
    "not-a-uuid",
    "0b5a3e0c4f7e4f4e9a575d9c2a3b1c00",  # no hyphens
    "{0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c00}",
    "urn:uuid:0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c00",
    " 0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c00",
    "0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c0\x00",  # NUL byte, right length
    "0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c0g",
    "0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c00" * 300_000,  # ~10 MB
]
BAD_ID_TYPES: list[Any] = [None, 123, 1.5, b"0b5a3e0c-4f7e-4f4e-9a57-5d9c2a3b1c00", ["x"], object()]
NAIVE = datetime(2026, 1, 1, 12, 0)


@pytest.fixture
def statements(db: Database) -> Iterator[StatementLog]:
    log = StatementLog(db)
    yield log
    log.remove()


async def assert_nothing_written(db: Database) -> None:
    async with db.session() as s:
        assert await count_sessions(s) == 0


async def test_bad_session_ids_are_rejected_before_sql(db: Database, statements: StatementLog) -> None:
    # One database for all cases (a loop, not parametrize): each case is cheap, a database is not.
    for operation in (get_session, delete_session):
        for bad in BAD_ID_STRINGS + BAD_ID_TYPES:
            case = f"{operation.__name__}({repr(bad)[:40]})"

            async def use(operation: Any = operation, bad: object = bad, case: str = case) -> None:
                async with db.session() as s:
                    await create_session(s)  # a write in the same transaction: it must not survive
                    sent = len(await statements.sent())
                    try:
                        await operation(s, bad)
                    finally:
                        assert len(await statements.sent()) == sent, f"SQL was sent for {case}"

            with pytest.raises(sessiondb.InvalidSessionId) as raised:
                await use()
            assert isinstance(raised.value, ValueError), case
            assert len(str(raised.value)) < 200, case  # a huge id is not echoed back whole
    await assert_nothing_written(db)


async def test_wrong_session_object_is_a_type_error(db: Database) -> None:
    for call in (create_session(object()), count_sessions(None), get_session("s", GOOD_ID)):  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="AsyncSession"):
            await call
    await assert_nothing_written(db)


def test_naive_and_non_datetimes_are_rejected_on_the_model() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        Session(created_at=NAIVE)
    with pytest.raises(TypeError, match="must be a datetime"):
        Session(created_at="2026-01-01T00:00:00Z")
    with pytest.raises(sessiondb.InvalidSessionId):
        Session(id="nope")
    assert Session(created_at=datetime(2026, 1, 1, tzinfo=UTC)).created_at.tzinfo is UTC


BAD_CORE_STATEMENTS: list[tuple[str, Any, type[Exception]]] = [
    ("insert naive created_at", insert(sessions).values(created_at=NAIVE), ValueError),
    ("where created_at < naive", select(sessions).where(sessions.c.created_at < NAIVE), ValueError),
    ("where id == 'nope'", select(sessions).where(sessions.c.id == "nope"), sessiondb.InvalidSessionId),
    ("where id == 42", select(sessions).where(sessions.c.id == 42), sessiondb.InvalidSessionId),
    ("insert id with NUL", insert(sessions).values(id="x\x00y"), sessiondb.InvalidSessionId),
]


async def test_core_statements_with_bad_values_raise_our_error_before_sql(
    db: Database, statements: StatementLog
) -> None:
    # The column types validate bound values; db.session() hands their error to the caller as is
    # (not wrapped in SQLAlchemy's StatementError).
    for case, statement, error in BAD_CORE_STATEMENTS:

        async def use(statement: Any = statement, case: str = case) -> None:
            async with db.session() as s:
                await create_session(s)
                sent = len(await statements.sent())
                try:
                    await s.execute(statement)
                finally:
                    assert len(await statements.sent()) == sent, f"SQL was sent for {case}"

        with pytest.raises(error) as raised:
            await use()
        assert type(raised.value).__module__ in ("builtins", "sessiondb.errors"), case
    await assert_nothing_written(db)


class RefusingType(TypeDecorator[str]):
    """A caller's own column type whose validation fails: not ours to unwrap."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> str:
        raise ValueError("refused by the caller's own type")


async def test_other_types_bind_errors_stay_sqlalchemys_statement_error(db: Database) -> None:
    # Only sessiondb's own validation errors are unwrapped: a caller's handler for StatementError
    # around their own types must keep working.
    refusing = select(literal("x", RefusingType()))
    for payload in (refusing, text("SELECT CAST(:doc AS text)").bindparams(bindparam("doc", type_=JSON))):
        parameters = {} if payload is refusing else {"doc": object()}
        with pytest.raises(StatementError) as raised:
            async with db.session() as s:
                await s.execute(payload, parameters)
        assert not isinstance(raised.value.orig, sessiondb.SessionDBError)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "mysql://app:s3cret-pw@db:3306/app",
        "postgresql://app:s3cret-pw@db:notaport/app",
        "postgresql://app:s3cret-pw@db:99999/app",  # was accepted, then failed at connect as "Port out of range"
        "postgresql://app:s3cret-pw@db:0/app",
        "postgresql://app:s3cret-pw@db:5432/app\x00",
        "not a url at all s3cret-pw",
        # An unescaped "@" in the password: the part after it was taken as the host and printed.
        "postgresql://app:pw@s3cret-pw@127.0.0.1:1/app",
        "postgresql://app:s3@cr/et-pw@db.example/app",  # the host came out as "cr", the database as "et-pw@..."
        "postgresql://app:a@s3cret-pw?c@h/db",
        12345,
    ],
)
def test_bad_urls_raise_configuration_error_without_password(url: Any) -> None:
    with pytest.raises(sessiondb.ConfigurationError) as raised:
        Database(url)
    assert "s3cret-pw" not in str(raised.value)


def test_bad_pool_settings_are_rejected() -> None:
    with pytest.raises(TypeError, match="PoolSettings"):
        Database("postgresql://localhost/app", pool={"size": 1})  # type: ignore[arg-type]
    for bad in ({"size": 0}, {"size": "10"}, {"timeout": 0}, {"timeout": float("nan")}, {"pgbouncer": "yes"}):
        with pytest.raises(sessiondb.ConfigurationError):
            PoolSettings(**bad)  # type: ignore[arg-type]


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_unreachable_server_names_host_and_port_never_password() -> None:
    port = unused_port()
    db = Database(f"postgresql://app:s3cret-pw@127.0.0.1:{port}/app", PoolSettings(connect_timeout=5))
    try:
        with pytest.raises(sessiondb.DatabaseUnavailable) as raised:
            async with db.session():
                pass
    finally:
        await db.dispose()
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "s3cret-pw" not in message
    assert "\n" not in message
    assert "s3cret-pw" not in repr(db)


async def test_missing_database_names_server(pg_server: Any) -> None:
    db = Database(pg_server.url_for("no_such_database_here"))
    try:
        with pytest.raises(sessiondb.DatabaseUnavailable, match="no_such_database_here"):
            async with db.session():
                pass
    finally:
        await db.dispose()
