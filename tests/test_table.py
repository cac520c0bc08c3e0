"""The migrated ``sessions`` table has exactly the promised shape."""

from __future__ import annotations

import uuid

import pytest

from tests.helpers import fetchval


async def test_sessions_has_exactly_id_and_created_at(database_url: str) -> None:
    columns = await fetchval(
        database_url,
        """
        SELECT json_agg(json_build_array(column_name, data_type, is_nullable, column_default)
                        ORDER BY ordinal_position)::text
        FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'sessions'
        """,
    )
    assert columns == (
        '[["id", "uuid", "NO", "gen_random_uuid()"], ["created_at", "timestamp with time zone", "NO", "now()"]]'
    )


async def test_id_is_the_primary_key(database_url: str) -> None:
    pk_columns = await fetchval(
        database_url,
        """
        SELECT array_agg(a.attname::text)
        FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
        WHERE i.indrelid = 'sessions'::regclass AND i.indisprimary
        """,
    )
    assert pk_columns == ["id"]


async def test_defaults_fill_both_columns(database_url: str) -> None:
    row_id = await fetchval(database_url, "INSERT INTO sessions DEFAULT VALUES RETURNING id")
    assert isinstance(row_id, uuid.UUID)
    age = await fetchval(database_url, "SELECT now() - created_at FROM sessions WHERE id = $1", row_id)
    assert age.total_seconds() >= 0


async def test_duplicate_id_is_rejected(database_url: str) -> None:
    import asyncpg

    row_id = await fetchval(database_url, "INSERT INTO sessions DEFAULT VALUES RETURNING id")
    with pytest.raises(asyncpg.UniqueViolationError):
        await fetchval(database_url, "INSERT INTO sessions (id) VALUES ($1)", row_id)


async def test_created_at_cannot_be_null(database_url: str) -> None:
    import asyncpg

    with pytest.raises(asyncpg.NotNullViolationError):
        await fetchval(database_url, "INSERT INTO sessions (created_at) VALUES (NULL)")
