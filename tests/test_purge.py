"""Retention: purge_sessions / ``sessiondb purge`` on a real server, including 100k rows under concurrent inserts."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import text

from sessiondb import Database, purge_sessions
from sessiondb.cli import main
from sessiondb.durations import parse_duration
from sessiondb.urls import asyncpg_dsn

OLD_ROWS = 100_000
YOUNG_ROWS = 1_000


async def _seed(url: str, old: int, young: int) -> None:
    """``old`` rows 31-32 days old and ``young`` rows up to 29 days old, with explicit created_at."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await conn.execute(
            "INSERT INTO sessions (created_at) "
            "SELECT now() - interval '31 days' - g * interval '0.5 second' FROM generate_series(1, $1::int) g",
            old,
        )
        await conn.execute(
            "INSERT INTO sessions (created_at) "
            "SELECT now() - interval '29 days' + g * interval '1 second' FROM generate_series(1, $1::int) g",
            young,
        )
        await conn.execute("ANALYZE sessions")
    finally:
        await conn.close()


async def _ids(db: Database, where: str = "true") -> set[str]:
    async with db.session() as s:
        return {str(i) for i in (await s.scalars(text(f"SELECT id FROM sessions WHERE {where}"))).all()}


async def test_purge_100k_rows_in_batches_without_blocking_concurrent_inserts(db: Database, database_url: str) -> None:
    await _seed(database_url, OLD_ROWS, YOUNG_ROWS)
    young_before = await _ids(db, "created_at > now() - interval '30 days'")
    assert len(young_before) == YOUNG_ROWS

    progress: list[int] = []  # purge total after each committed batch
    seen_by_inserts: list[int] = []  # batches the purge had committed when each insert finished
    inserted: list[str] = []
    purge_started = asyncio.Event()
    purge_done = asyncio.Event()

    def after_batch(total: int) -> None:
        progress.append(total)
        purge_started.set()

    async def insert_while_purging() -> None:
        # lock_timeout: an insert that had to wait for any lock the purge holds fails at once, so
        # "not blocked" is asserted without timing anything.
        conn = await asyncpg.connect(asyncpg_dsn(database_url), server_settings={"lock_timeout": "10ms"})
        try:
            await purge_started.wait()
            while not purge_done.is_set():
                inserted.append(str(await conn.fetchval("INSERT INTO sessions DEFAULT VALUES RETURNING id")))
                seen_by_inserts.append(len(progress))
        finally:
            await conn.close()

    async def purge() -> int:
        try:
            async with db.session() as s:
                return await purge_sessions(s, timedelta(days=30), batch_size=2_000, on_batch=after_batch)
        finally:
            purge_done.set()

    removed, _ = await asyncio.gather(purge(), insert_while_purging())

    assert removed == OLD_ROWS
    assert progress == list(range(2_000, OLD_ROWS + 1, 2_000))  # 50 bounded batches, each committed
    # Inserts completed while the purge was mid-way (after its first batch, before its last).
    assert any(0 < batches < len(progress) for batches in seen_by_inserts), seen_by_inserts
    remaining = await _ids(db)
    assert remaining == young_before | set(inserted)  # younger rows and concurrent inserts untouched


async def test_purge_query_uses_the_created_at_index(db: Database, database_url: str) -> None:
    await _seed(database_url, 20_000, 100)
    async with db.session() as s:
        plan = "\n".join(
            (
                await s.scalars(
                    text(
                        "EXPLAIN SELECT id FROM sessions WHERE created_at < now() - interval '30 days' "
                        "ORDER BY created_at LIMIT 5000 FOR UPDATE SKIP LOCKED"
                    )
                )
            ).all()
        )
    assert "ix_sessions_created_at" in plan, plan


async def test_purge_works_for_a_plain_role_with_the_documented_privileges(db: Database, database_url: str) -> None:
    await _seed(database_url, 500, 10)
    role = f"purger_{uuid.uuid4().hex[:8]}"  # roles are cluster-wide: unique name
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    await admin.execute(f"CREATE ROLE {role} NOSUPERUSER")
    await admin.execute(f"GRANT SELECT, DELETE, UPDATE ON sessions TO {role}")  # as the README says
    try:
        async with db.session() as s:
            await s.execute(text(f"SET ROLE {role}"))  # session-level: survives the per-batch commits
            assert await purge_sessions(s, timedelta(days=30), batch_size=100) == 500
            assert (await s.execute(text("SELECT current_user"))).scalar_one() == role
    finally:
        await db.dispose()  # that pooled connection is still SET ROLE
        await admin.execute(f"DROP OWNED BY {role}")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()
    assert len(await _ids(db)) == 10


async def test_dry_run_counts_and_deletes_nothing(db: Database, database_url: str) -> None:
    await _seed(database_url, 300, 20)
    async with db.session() as s:
        assert await purge_sessions(s, timedelta(days=30), dry_run=True) == 300
    assert len(await _ids(db)) == 320


async def test_aware_datetime_cutoff_and_naive_one_rejected(db: Database, database_url: str) -> None:
    await _seed(database_url, 300, 20)
    async with db.session() as s:
        with pytest.raises(ValueError, match="timezone-aware"):
            await purge_sessions(s, datetime.now() - timedelta(days=30))  # naive on purpose
        assert await purge_sessions(s, datetime.now(UTC) - timedelta(days=30), batch_size=7) == 300
    assert len(await _ids(db)) == 20


@pytest.mark.parametrize(
    ("older_than", "batch_size", "error", "message"),
    [
        (timedelta(0), 10, ValueError, "positive timedelta"),
        (timedelta(days=-1), 10, ValueError, "positive timedelta"),
        ("30d", 10, TypeError, "timedelta or an aware datetime"),
        (timedelta(days=1), 0, ValueError, "between 1 and"),
        (timedelta(days=1), True, TypeError, "must be an int"),
        (timedelta(days=1), 10**6, ValueError, "between 1 and"),
        # Would put the cutoff before any representable timestamp ("timestamp out of range" from the server).
        (timedelta(days=999_999_999), 10, ValueError, "at most 36525 days"),
    ],
)
async def test_bad_arguments_are_rejected_before_any_sql(
    db: Database, older_than: object, batch_size: object, error: type[Exception], message: str
) -> None:
    async with db.session() as s:
        with pytest.raises(error, match=message):
            await purge_sessions(s, older_than, batch_size)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text_", "expected"),
    [
        ("30d", timedelta(days=30)),
        ("12h", timedelta(hours=12)),
        ("90m", timedelta(minutes=90)),
        ("45s", timedelta(seconds=45)),
        ("3155760000s", timedelta(days=36525)),  # 100 years, the limit, in seconds: was refused as malformed
    ],
)
def test_durations(text_: str, expected: timedelta) -> None:
    assert parse_duration(text_) == expected


@pytest.mark.parametrize(
    "bad",
    [
        *["", "30", "d", "0d", "-2h", "1.5d", "30 d", "30days", "30D", " 30d", "3w"],
        *["9" * 12 + "d", "9" * 40 + "s"],
        "\u0663d",  # ARABIC-INDIC DIGIT THREE: was read as 3 days
    ],
)
def test_invalid_durations_are_a_clear_error(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


def test_cli_purge_dry_run_then_purge(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    asyncio.run(_seed(database_url, 250, 10))
    assert main(["purge", "--older-than", "30d", "--dry-run", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.startswith("would delete 250 session(s) older than 30d")
    assert main(["purge", "--older-than", "720h", "--batch-size", "100", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.startswith("deleted 250 session(s) older than 720h")
    assert main(["purge", "--older-than", "30d", "--database-url", database_url]) == 0
    assert capsys.readouterr().out.startswith("deleted 0 session(s)")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--older-than", "30 days"], "invalid duration '30 days'"),
        (["--older-than", "999999999d"], "at most 36525 days"),
        (["--older-than", "30d", "--batch-size", "200000"], "between 1 and 100000, got 200000"),
    ],
)
def test_cli_purge_rejects_bad_arguments_before_connecting(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["purge", *arguments, "--database-url", "postgresql://u@127.0.0.1:1/x"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err


def test_cli_purge_on_an_unmigrated_database_is_one_line(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["purge", "--older-than", "30d", "--database-url", empty_database_url]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("sessiondb: error: PostgreSQL at ")
    assert 'relation "sessions" does not exist' in err
