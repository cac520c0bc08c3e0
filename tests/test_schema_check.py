"""``sessiondb check``: the live schema against the SQLAlchemy metadata, on a real server."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.exc import SAWarning

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


def test_trigger_function_that_no_longer_rejects_update_is_reported(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _execute(
        database_url,
        # Same name and signature, so the untouched trigger still calls it: it just stopped raising.
        "CREATE OR REPLACE FUNCTION sessions_reject_update() RETURNS trigger LANGUAGE plpgsql AS $$"
        "\n    BEGIN RETURN NULL; END\n$$",
        "UPDATE sessions SET created_at = now()",  # succeeds now: the drift is real
    )
    drift = (
        "function sessions_reject_update() is not the one the migrations install (language plpgsql, "
        "body 'BEGIN RETURN NULL; END'): trigger sessions_immutable on sessions may let UPDATE through"
    )

    assert check_schema(database_url) == [drift]
    assert main(["check", "--database-url", database_url]) == 1
    assert f"DRIFT {drift}\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("narrowed_trigger", "definition"),
    [
        pytest.param(
            "BEFORE UPDATE OF id ON sessions FOR EACH STATEMENT",
            "BEFORE UPDATE OF id ON public.sessions FOR EACH STATEMENT",
            id="update-of-one-column",
        ),
        pytest.param(
            "BEFORE UPDATE ON sessions FOR EACH STATEMENT WHEN (false)",
            "BEFORE UPDATE ON public.sessions FOR EACH STATEMENT WHEN (false)",
            id="when-condition",
        ),
    ],
)
def test_trigger_that_fires_on_only_some_updates_is_reported(
    database_url: str, capsys: pytest.CaptureFixture[str], narrowed_trigger: str, definition: str
) -> None:
    _execute(
        database_url,
        "DROP TRIGGER sessions_immutable ON sessions",
        f"CREATE TRIGGER sessions_immutable {narrowed_trigger} EXECUTE FUNCTION sessions_reject_update()",
        "ALTER TABLE sessions ENABLE ALWAYS TRIGGER sessions_immutable",
        "UPDATE sessions SET created_at = now()",  # succeeds now: the drift is real
    )
    drift = (
        f"trigger sessions_immutable on sessions is defined as CREATE TRIGGER sessions_immutable {definition} "
        "EXECUTE FUNCTION sessions_reject_update(), "
        "expected BEFORE UPDATE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION sessions_reject_update()"
    )

    assert check_schema(database_url) == [drift]
    assert main(["check", "--database-url", database_url]) == 1
    assert f"DRIFT {drift}\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("index_definition", "drift"),
    [
        pytest.param(
            "USING hash (created_at)",
            "index ix_sessions_created_at uses hash, the model says btree",
            id="hash",
        ),
        pytest.param(
            # 'infinity' rather than a date: the predicate reads back the same in every server time zone.
            "(created_at) WHERE created_at > 'infinity'",
            "index ix_sessions_created_at is partial (WHERE (created_at > 'infinity'::timestamp with time zone)), "
            "the model says it covers every row",
            id="partial",
        ),
        pytest.param(
            # Reflected with None for a column name: joining the names used to raise TypeError.
            "((created_at AT TIME ZONE 'UTC'))",
            "index ix_sessions_created_at covers ((created_at AT TIME ZONE 'UTC'::text)), the model says (created_at)",
            id="expression",
        ),
        pytest.param(
            "(created_at, (id::text))",
            "index ix_sessions_created_at covers (created_at, (id::text)), the model says (created_at)",
            id="column-and-expression",
        ),
    ],
)
def test_index_rebuilt_in_another_shape_is_reported(
    database_url: str, capsys: pytest.CaptureFixture[str], index_definition: str, drift: str
) -> None:
    _execute(
        database_url,
        "DROP INDEX ix_sessions_created_at",
        f"CREATE INDEX ix_sessions_created_at ON sessions {index_definition}",
    )

    assert check_schema(database_url) == [drift]
    assert main(["check", "--database-url", database_url]) == 1
    captured = capsys.readouterr()
    assert f"DRIFT {drift}\n" in captured.out
    assert "differs from the model in 1 way(s)" in captured.err


def test_column_of_a_type_sqlalchemy_cannot_reflect_is_reported(database_url: str) -> None:
    _execute(
        database_url,
        "CREATE TYPE pair AS (a int, b int)",
        "ALTER TABLE sessions ALTER COLUMN created_at DROP DEFAULT",
        "ALTER TABLE sessions ALTER COLUMN created_at TYPE pair USING ROW(1, 2)::pair",
    )

    with pytest.warns(SAWarning, match="Did not recognize type 'pair'"):
        differences = check_schema(database_url)

    assert differences == [
        "column sessions.created_at has type unknown to SQLAlchemy, the model says TIMESTAMP WITH TIME ZONE",
        "column sessions.created_at has default none, the model says now()",
    ]
