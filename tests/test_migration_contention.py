"""Migrations under contention: concurrent migrators, a SIGKILLed migrator, and breaking yoyo's lock row."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import psycopg
import pytest

from sessiondb import MigrationError, apply_migrations, migration_status
from sessiondb.cli import main
from sessiondb.migrations import _read, verify_migrations
from sessiondb.urls import migration_url

ALL_MIGRATIONS = [m.id for m in _read(None)]


def _connect(url: str) -> psycopg.Connection:
    return psycopg.connect(migration_url(url).replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def _apply_in_child(url: str) -> list[str]:
    return apply_migrations(url)


def test_four_processes_apply_each_migration_exactly_once(empty_database_url: str) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_apply_in_child, [empty_database_url] * 4)

    applied_by_someone = [mid for result in results for mid in result]
    assert sorted(applied_by_someone) == sorted(ALL_MIGRATIONS)  # each id returned by exactly one process
    with _connect(empty_database_url) as conn:
        logged = conn.execute(
            "SELECT migration_id, count(*) FROM _yoyo_log WHERE operation = 'apply' GROUP BY migration_id"
        ).fetchall()
        marked = conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone()
        leftover_locks = conn.execute("SELECT count(*) FROM yoyo_lock").fetchone()
    assert dict(logged) == dict.fromkeys(ALL_MIGRATIONS, 1)
    assert marked == (len(ALL_MIGRATIONS),)
    assert leftover_locks == (0,)


@contextlib.contextmanager
def _running_migrator(url: str) -> Iterator[int]:
    """A process holding both migration locks (advisory lock and yoyo's row) until exit; yields its pid."""
    script = textwrap.dedent(
        """
        import sys, time
        from sessiondb.migrations import _locked_backend
        with _locked_backend(sys.argv[1]):
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
        yield child.pid
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def _age_lock_row_past_grace_period(url: str) -> None:
    with _connect(url) as conn:
        conn.execute("UPDATE yoyo_lock SET ctime = ctime - interval '11 minutes'")  # past the 10 min grace


@pytest.fixture
def killed_migrator(empty_database_url: str) -> int:
    """A process that took both migration locks, then was SIGKILLed while holding them. Returns its pid."""
    with _running_migrator(empty_database_url) as pid:
        pass
    with _connect(empty_database_url) as conn:
        # The row yoyo wrote survives the kill: that is what would block the next run.
        assert conn.execute("SELECT pid FROM yoyo_lock").fetchone() == (pid,)
    return pid


def test_young_lock_row_of_killed_migrator_fails_with_one_clear_line(
    empty_database_url: str, killed_migrator: int
) -> None:
    with pytest.raises(MigrationError) as caught:
        apply_migrations(empty_database_url, lock_wait=1.0)
    message = str(caught.value)
    assert "\n" not in message
    assert f"locked by process {killed_migrator} since " in message
    assert "sessiondb migrate --break-lock" in message
    # The advisory lock died with the killed process's connection (we got as far as yoyo's row, which
    # the message names); nothing was migrated and the row is left for a human to judge.
    with _connect(empty_database_url) as conn:
        assert conn.execute("SELECT to_regclass('sessions')").fetchone() == (None,)
        assert conn.execute("SELECT pid FROM yoyo_lock").fetchone() == (killed_migrator,)


def test_lock_row_older_than_grace_period_is_broken_with_a_warning(
    empty_database_url: str, killed_migrator: int, caplog: pytest.LogCaptureFixture
) -> None:
    _age_lock_row_past_grace_period(empty_database_url)

    with caplog.at_level(logging.WARNING, logger="sessiondb.migrations"):
        applied = apply_migrations(empty_database_url, lock_wait=5.0)

    assert applied == ALL_MIGRATIONS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"held by process {killed_migrator}" in w and "grace period" in w for w in warnings), warnings


def test_old_lock_row_of_a_live_migrator_is_not_broken(empty_database_url: str) -> None:
    # A migration running longer than the grace period: its row looks stale, but the advisory lock shows
    # the migrator is alive, so the row is left alone and nothing runs beside it.
    with _running_migrator(empty_database_url) as migrator:
        _age_lock_row_past_grace_period(empty_database_url)

        with pytest.raises(MigrationError) as caught:
            apply_migrations(empty_database_url, lock_wait=1.0)

        with _connect(empty_database_url) as conn:
            assert conn.execute("SELECT pid FROM yoyo_lock").fetchone() == (migrator,)
            assert conn.execute("SELECT to_regclass('sessions')").fetchone() == (None,)
    message = str(caught.value)
    assert message.startswith("another sessiondb process has been migrating ")
    assert "for over 1s; try again when it finishes" in message


def test_status_and_verify_neither_wait_for_nor_break_a_migration_lock(empty_database_url: str) -> None:
    def look_and_check_the_row_is_kept(pid: int) -> None:
        assert not any(r["applied"] for r in migration_status(empty_database_url))
        assert verify_migrations(empty_database_url) == []
        with _connect(empty_database_url) as conn:
            assert conn.execute("SELECT pid FROM yoyo_lock").fetchone() == (pid,)

    with _running_migrator(empty_database_url) as migrator:
        _age_lock_row_past_grace_period(empty_database_url)
        look_and_check_the_row_is_kept(migrator)  # before the fix: waited a minute for the advisory lock
    look_and_check_the_row_is_kept(migrator)  # killed: before the fix, status broke its stale row


def test_failing_lock_row_insert_names_its_cause_not_a_lock(database_url: str) -> None:
    # yoyo retries any failed INSERT of its lock row and then reports "Database locked"; behind PgBouncer
    # the real cause was a prepared-statement collision. Here a trigger makes the INSERT fail.
    with _connect(database_url) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_lock_row() RETURNS trigger LANGUAGE plpgsql "
            "AS $$ BEGIN RAISE EXCEPTION 'lock row refused by the test'; END $$"
        )
        conn.execute("CREATE TRIGGER refuse BEFORE INSERT ON yoyo_lock FOR EACH ROW EXECUTE FUNCTION refuse_lock_row()")

    with pytest.raises(MigrationError) as caught:
        apply_migrations(database_url, lock_wait=1.0)

    message = str(caught.value)
    assert "cannot take yoyo's lock row on " in message
    assert message.endswith("lock row refused by the test")
    assert "Database locked" not in message


def test_migrate_break_lock_breaks_a_young_lock_row(empty_database_url: str, killed_migrator: int) -> None:
    assert main(["migrate", "--break-lock", "--database-url", empty_database_url]) == 0
    with _connect(empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone() == (len(ALL_MIGRATIONS),)
        assert conn.execute("SELECT count(*) FROM yoyo_lock").fetchone() == (0,)


def test_lock_options_are_validated(empty_database_url: str) -> None:
    with pytest.raises(ValueError, match="lock_wait"):
        apply_migrations(empty_database_url, lock_wait=-1)
    with pytest.raises(ValueError, match="stale_lock_after"):
        apply_migrations(empty_database_url, stale_lock_after=True)  # type: ignore[arg-type]
