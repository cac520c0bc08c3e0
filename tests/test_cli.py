"""The ``sessiondb`` command, run as a user would: a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sessiondb.migrations import _read
from tests.helpers import fetchval

SESSIONDB = str(Path(sys.executable).with_name("sessiondb"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment.update(env or {})
    return subprocess.run([SESSIONDB, *args], capture_output=True, text=True, timeout=180, env=environment, check=False)


async def test_migrate_status_rollback(empty_database_url: str) -> None:
    migrated = run("migrate", "--database-url", empty_database_url)
    assert migrated.returncode == 0, migrated.stderr
    # One line in a log, not wrapped at 80 columns as it was when stdout is not a terminal.
    [applied_line] = [line for line in migrated.stdout.splitlines() if line.startswith("applied ")]
    assert applied_line.endswith(", ".join(m.id for m in _read(None)))
    assert "up to date" in run("migrate", "--database-url", empty_database_url).stdout

    status = run("status", "--json", "--database-url", empty_database_url)
    assert status.returncode == 0, status.stderr
    rows = json.loads(status.stdout)
    assert rows[0]["id"] == "0001_create_sessions"
    assert all(r["applied"] and r["applied_at"].endswith("+00:00") for r in rows)

    text_status = run("status", "--database-url", empty_database_url)
    assert "applied" in text_status.stdout and "0001_create_sessions" in text_status.stdout
    # The URL a DBA gives `yoyo apply` names the same server (it used to be an unsupported scheme).
    yoyo_url = empty_database_url.replace("postgresql://", "postgresql+psycopg://", 1)
    assert json.loads(run("status", "--json", "--database-url", yoyo_url).stdout) == rows

    rolled = run("rollback", "--count", "99", "--database-url", empty_database_url)
    assert rolled.returncode == 0, rolled.stderr
    assert "0001_create_sessions" in rolled.stdout
    assert await fetchval(empty_database_url, "SELECT to_regclass('sessions')") is None


def test_database_url_comes_from_the_environment(empty_database_url: str) -> None:
    result = run("migrate", env={"DATABASE_URL": empty_database_url})
    assert result.returncode == 0, result.stderr
    assert "0001_create_sessions" in result.stdout


def test_without_any_url_it_uses_an_embedded_server() -> None:
    result = run("migrate")
    assert result.returncode == 0, result.stderr
    assert "embedded" in result.stdout
    assert "0001_create_sessions" in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["migrate", "--database-url", "mysql://u:hunter2@h/db"], "unsupported database URL scheme"),
        (["status", "--database-url", "not a url"], "not a valid URL"),
        (["migrate", "--database-url", "postgresql://u:hunter2@127.0.0.1:1/app"], "127.0.0.1:1"),
        # An unescaped "@" in the password: the part after it was printed as part of the host.
        (["status", "--database-url", "postgresql://u:pw@hunter2@127.0.0.1:1/app"], "as %40"),
    ],
)
def test_expected_failures_print_one_line_and_exit_1(args: list[str], expected: str) -> None:
    result = run(*args)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("sessiondb: error: ")
    assert expected in lines[0]
    assert "hunter2" not in result.stderr + result.stdout


def test_usage_errors_exit_2() -> None:
    result = run("rollback", "--count", "0", "--database-url", "postgresql://u@h/db")
    assert result.returncode == 2
    assert "expected a number >= 1" in result.stderr


def test_empty_database_url_is_an_error_not_the_environments_server(empty_database_url: str) -> None:
    # `--database-url "$UNSET_VAR"` used to fall back to DATABASE_URL (or an embedded server).
    result = run("migrate", "--database-url", "", env={"DATABASE_URL": empty_database_url})
    assert result.returncode == 2
    assert "--database-url: is empty" in result.stderr
    assert "0001_create_sessions" not in result.stdout
