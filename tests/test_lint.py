"""``sessiondb lint``: squawk over the migrations with the checked-in configuration."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sessiondb.cli import main
from sessiondb.lint import CONFIG_NAME, find_config, run_squawk
from sessiondb.migrations import default_migrations_dir


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    source = default_migrations_dir()
    shutil.copytree(source, tmp_path / "sql")
    shutil.copy(find_config(source), tmp_path / CONFIG_NAME)
    return tmp_path / "sql"


def test_checked_in_migrations_lint_clean(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["lint"]) == 0
    assert "Found 0 issues" in capfd.readouterr().out


def test_a_blocking_migration_fails_lint_naming_the_rule(sql_copy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    (sql_copy / "0004_blocking_index.sql").write_text(
        "SET LOCAL lock_timeout = '5s';\nSET LOCAL statement_timeout = '5s';\n"
        "CREATE INDEX ix_sessions_id_created ON sessions (id, created_at);\n"
    )
    assert main(["lint", "--migrations-dir", str(sql_copy)]) != 0
    output = capfd.readouterr().out
    assert "require-concurrent-index-creation" in output
    assert "0004_blocking_index.sql" in output


def test_non_transactional_file_without_directive_is_flagged(sql_copy: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # Without squawk-disable-assume-in-transaction, squawk assumes yoyo's transaction wraps the file.
    index_file = sql_copy / "0003_sessions_created_at_index.sql"
    index_file.write_text(index_file.read_text().replace("-- squawk-disable-assume-in-transaction\n", ""))
    assert run_squawk(sql_copy) != 0
    assert "ban-concurrent-index-creation-in-transaction" in capfd.readouterr().out


def test_missing_config_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copytree(default_migrations_dir(), tmp_path / "sql")
    assert main(["lint", "--migrations-dir", str(tmp_path / "sql")]) == 1
    assert f"no squawk configuration at {tmp_path / CONFIG_NAME}" in capsys.readouterr().err


@pytest.mark.parametrize("migration", sorted(p.name for p in default_migrations_dir().glob("*.sql")))
def test_every_migration_file_is_linted_for_lock_timeouts(
    migration: str, sql_copy: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    # No file is excluded from the lint: drop a file's timeouts and squawk must notice.
    path = sql_copy / migration
    text = path.read_text()
    assert "lock_timeout" in text
    path.write_text("\n".join(line for line in text.splitlines() if "_timeout" not in line) + "\n")
    assert run_squawk(sql_copy) != 0
    output = capfd.readouterr().out
    assert "require-lock-timeout" in output or "require-timeout-settings" in output, output
    assert migration in output
