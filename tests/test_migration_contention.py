"""Migrations under contention: concurrent migrators, a SIGKILLed migrator, and breaking yoyo's lock row."""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap

import psycopg
import pytest

from sessiondb import MigrationError, apply_migrations
from sessiondb.cli import main
from sessiondb.migrations import _read
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


@pytest.fixture
def killed_migrator(empty_database_url: str) -> int:
    """A process that took both migration locks, then was SIGKILLed while holding them. Returns its pid."""
    script = textwrap.dedent(
        """
        import sys, time
        from sessiondb.migrations import _locked_backend
        with _locked_backend(sys.argv[1]):
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script, empty_database_url], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "locked"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    with _connect(empty_database_url) as conn:
        # The row yoyo wrote survives the kill: that is what would block the next run.
        assert conn.execute("SELECT pid FROM yoyo_lock").fetchone() == (child.pid,)
    return child.pid


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
    with _connect(empty_database_url) as conn:
        conn.execute("UPDATE yoyo_lock SET ctime = ctime - interval '11 minutes'")  # past the 10 min grace

    with caplog.at_level(logging.WARNING, logger="sessiondb.migrations"):
        applied = apply_migrations(empty_database_url, lock_wait=5.0)

    assert applied == ALL_MIGRATIONS
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"held by process {killed_migrator}" in w and "grace period" in w for w in warnings), warnings


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
