"""``sessiondb check``: the live schema against the SQLAlchemy metadata, on a real server."""

from __future__ import annotations

import psycopg
import pytest

from sessiondb.cli import main
from sessiondb.schema_check import check_schema
from sessiondb.urls import migration_url


def _execute(url: str, *statements: str) -> None:
    with psycopg.connect(migration_url(url).replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as c:
        for statement in statements:
            c.execute(statement)  # type: ignore[arg-type]


def test_freshly_migrated_schema_matches_the_model(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_schema(database_url) == []
    assert main(["check", "--database-url", database_url]) == 0
    assert "matches the sessiondb model" in capsys.readouterr().out


def test_altered_column_is_named_and_check_exits_non_zero(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _execute(database_url, "ALTER TABLE sessions ALTER COLUMN created_at TYPE timestamp without time zone")

    assert check_schema(database_url) == [
        "column sessions.created_at has type TIMESTAMP WITHOUT TIME ZONE, the model says TIMESTAMP WITH TIME ZONE"
    ]
    assert main(["check", "--database-url", database_url]) == 1
    captured = capsys.readouterr()
    assert "DRIFT column sessions.created_at has type TIMESTAMP WITHOUT TIME ZONE" in captured.out
    assert "differs from the model in 1 way(s)" in captured.err


def test_every_kind_of_drift_is_reported(database_url: str) -> None:
    _execute(
        database_url,
        "ALTER TABLE sessions ALTER COLUMN created_at DROP NOT NULL",
        "ALTER TABLE sessions ALTER COLUMN id DROP DEFAULT",
        "ALTER TABLE sessions ADD COLUMN user_agent text",
        "DROP INDEX ix_sessions_created_at",
        "CREATE INDEX ix_sessions_user_agent ON sessions (user_agent)",
        "ALTER TABLE sessions DISABLE TRIGGER sessions_immutable",
        "ALTER TABLE sessions DROP CONSTRAINT sessions_pkey",
    )

    assert sorted(check_schema(database_url)) == sorted(
        [
            "column sessions.created_at is nullable, the model says NOT NULL",
            "column sessions.id has default none, the model says gen_random_uuid()",
            "column sessions.user_agent exists in the database but not in the model",
            "primary key of sessions is (none), the model says (id)",
            "index ix_sessions_created_at on sessions (created_at) is missing",
            "index ix_sessions_user_agent on sessions exists in the database but not in the model",
            "trigger sessions_immutable on sessions is disabled, expected ENABLE ALWAYS",
        ]
    )


def test_missing_trigger_and_invalid_index_are_reported(database_url: str) -> None:
    _execute(
        database_url,
        "DROP TRIGGER sessions_immutable ON sessions",
        # What a failed CREATE INDEX CONCURRENTLY leaves behind.
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'ix_sessions_created_at'::regclass",
    )

    differences = check_schema(database_url)

    assert "trigger sessions_immutable on sessions is missing" in differences
    assert any(d.startswith("index ix_sessions_created_at on sessions is INVALID") for d in differences)
    assert len(differences) == 2


def test_missing_table_is_reported(empty_database_url: str) -> None:
    assert check_schema(empty_database_url) == ["table sessions is missing"]
