"""Migrations 0002/0003 on a real server: immutability for every role, the concurrent index, re-runs, status."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import datetime

import psycopg
import pytest

from sessiondb import apply_migrations, rollback_migrations
from sessiondb.cli import main
from sessiondb.migrations import _read
from sessiondb.urls import migration_url

ALL_MIGRATIONS = [m.id for m in _read(None)]
INDEX = "ix_sessions_created_at"


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(migration_url(url).replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection]:
    with _connect(database_url) as connection:
        connection.execute("INSERT INTO sessions DEFAULT VALUES")
        yield connection


@pytest.fixture
def plain_role(conn: psycopg.Connection) -> Iterator[str]:
    """A non-superuser role with every table privilege on sessions (roles are cluster-wide: unique name)."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    conn.execute(f"CREATE ROLE {role} NOSUPERUSER")
    conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON sessions TO {role}")
    try:
        yield role
    finally:
        conn.execute("RESET ROLE")
        conn.execute(f"DROP OWNED BY {role}")
        conn.execute(f"DROP ROLE {role}")


def _assert_update_refused(conn: psycopg.Connection, statement: str) -> None:
    with pytest.raises(psycopg.errors.RestrictViolation, match="sessions rows are immutable"):
        conn.execute(statement)  # type: ignore[arg-type]


def test_update_is_refused_for_a_superuser(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (True,)
    _assert_update_refused(conn, "UPDATE sessions SET created_at = created_at - interval '1 day'")
    _assert_update_refused(conn, "UPDATE sessions SET id = gen_random_uuid()")
    # Statement-level: even an UPDATE that matches no row is refused.
    _assert_update_refused(conn, "UPDATE sessions SET created_at = now() WHERE false")
    # The usual way a superuser skips triggers does not skip this one (ENABLE ALWAYS).
    conn.execute("SET session_replication_role = replica")
    _assert_update_refused(conn, "UPDATE sessions SET created_at = now()")


def test_update_is_refused_for_a_plain_role_with_update_privilege(conn: psycopg.Connection, plain_role: str) -> None:
    conn.execute(f"SET ROLE {plain_role}")
    assert conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone() == (False,)
    _assert_update_refused(conn, "UPDATE sessions SET created_at = now()")
    # Inserts and deletes, the table's normal life, still work for that role.
    conn.execute("INSERT INTO sessions DEFAULT VALUES")
    assert conn.execute("DELETE FROM sessions").rowcount == 2


def test_rows_survive_the_refused_update(conn: psycopg.Connection) -> None:
    before = conn.execute("SELECT id, created_at FROM sessions").fetchall()
    _assert_update_refused(conn, "UPDATE sessions SET created_at = now() - interval '1 year'")
    assert conn.execute("SELECT id, created_at FROM sessions").fetchall() == before


def test_created_at_index_is_valid_and_on_created_at(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indexrelid = %s::regclass",
        (INDEX,),
    ).fetchone()
    assert row is not None
    assert row[0] is True
    assert row[1].endswith("USING btree (created_at)")


def test_each_migration_reruns_cleanly_when_applied_but_not_marked(database_url: str) -> None:
    # The state a migrator killed between running a migration and marking it leaves behind.
    with _connect(database_url) as conn:
        conn.execute("DELETE FROM _yoyo_migration WHERE migration_id <> %s", (ALL_MIGRATIONS[0],))

    assert apply_migrations(database_url) == ALL_MIGRATIONS[1:]

    with _connect(database_url) as conn:
        triggers = conn.execute("SELECT count(*) FROM pg_trigger WHERE tgname = 'sessions_immutable'").fetchone()
        indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'sessions'").fetchone()
    assert triggers == (1,)
    assert indexes == (2,)  # primary key + created_at, no duplicate


def test_index_migration_rebuilds_an_invalid_leftover_index(database_url: str) -> None:
    rollback_migrations(database_url, count=1)
    with _connect(database_url) as conn:
        # What a failed or cancelled CREATE INDEX CONCURRENTLY leaves: the index, marked INVALID.
        conn.execute(f"CREATE INDEX {INDEX} ON sessions (created_at)")
        conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = %s::regclass", (INDEX,))

    assert apply_migrations(database_url) == [ALL_MIGRATIONS[-1]]

    with _connect(database_url) as conn:
        assert conn.execute("SELECT indisvalid FROM pg_index WHERE indexrelid = %s::regclass", (INDEX,)).fetchone() == (
            True,
        )


def test_rollback_files_undo_each_migration_and_apply_again(database_url: str) -> None:
    rollback_migrations(database_url, count=2)
    with _connect(database_url) as conn:
        conn.execute("INSERT INTO sessions DEFAULT VALUES")
        assert conn.execute("UPDATE sessions SET created_at = now()").rowcount == 1  # trigger gone
        assert conn.execute("SELECT to_regclass(%s)", (INDEX,)).fetchone() == (None,)

    rollback_migrations(database_url, count=1)
    with _connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('sessions')").fetchone() == (None,)

    assert apply_migrations(database_url) == ALL_MIGRATIONS


def test_status_json_lists_pending_then_applied_with_utc_timestamps(
    empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--json", "--database-url", empty_database_url]) == 0
    pending = json.loads(capsys.readouterr().out)
    assert pending == [{"id": mid, "applied": False, "applied_at": None} for mid in ALL_MIGRATIONS]

    apply_migrations(empty_database_url)
    assert main(["status", "--json", "--database-url", empty_database_url]) == 0
    applied = json.loads(capsys.readouterr().out)
    assert [(row["id"], row["applied"]) for row in applied] == [(mid, True) for mid in ALL_MIGRATIONS]
    for row in applied:
        assert datetime.fromisoformat(row["applied_at"]).utcoffset() is not None
        assert row["applied_at"].endswith("+00:00")
