"""``sessiondb verify``: a migration file edited after it was applied is reported, like Flyway validate."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from sessiondb import apply_migrations, rollback_migrations
from sessiondb.cli import main
from sessiondb.migrations import _read, default_migrations_dir, verify_migrations
from sessiondb.urls import migration_url

IMMUTABLE = "0002_sessions_immutable"
INDEX = "0003_sessions_created_at_index"


@pytest.fixture
def sql_copy(tmp_path: Path) -> Path:
    target = tmp_path / "sql"
    shutil.copytree(default_migrations_dir(), target)
    return target


def _states(url: str, sql_dir: Path) -> dict[str, str]:
    return {c.id: c.state for c in verify_migrations(url, migrations_dir=sql_dir)}


def _plain_yoyo(command: str, url: str, sql_dir: Path, *args: str) -> None:
    """What a DBA runs: the yoyo CLI itself, on a migrations folder."""
    yoyo = Path(sys.executable).parent / "yoyo"
    subprocess.run(
        [str(yoyo), command, "--batch", *args, "--database", migration_url(url), str(sql_dir)],
        check=True,
        capture_output=True,
    )


def test_untouched_files_verify_ok(empty_database_url: str, sql_copy: Path) -> None:
    applied = apply_migrations(empty_database_url, migrations_dir=sql_copy)

    assert _states(empty_database_url, sql_copy) == dict.fromkeys(applied, "ok")
    assert main(["verify", "--database-url", empty_database_url, "--migrations-dir", str(sql_copy)]) == 0


def test_file_edited_after_apply_is_a_mismatch(
    empty_database_url: str, sql_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    applied = apply_migrations(empty_database_url, migrations_dir=sql_copy)
    edited = sql_copy / f"{IMMUTABLE}.sql"
    edited.write_text(edited.read_text().replace("'5s'", "'50s'"))

    states = _states(empty_database_url, sql_copy)

    assert states == {**dict.fromkeys(applied, "ok"), IMMUTABLE: "mismatch"}
    assert main(["verify", "--database-url", empty_database_url, "--migrations-dir", str(sql_copy)]) == 1
    captured = capsys.readouterr()
    assert f"MISMATCH    {IMMUTABLE}: file changed after it was applied" in captured.out
    assert "1 applied migration(s) differ from their files" in captured.err


def test_applied_file_deleted_is_reported(empty_database_url: str, sql_copy: Path) -> None:
    apply_migrations(empty_database_url, migrations_dir=sql_copy)
    (sql_copy / "0003_sessions_created_at_index.sql").unlink()
    (sql_copy / "0003_sessions_created_at_index.rollback.sql").unlink()

    assert _states(empty_database_url, sql_copy)["0003_sessions_created_at_index"] == "missing_file"


def test_rollback_forgets_the_checksum_so_an_edited_file_can_be_reapplied(
    empty_database_url: str, sql_copy: Path
) -> None:
    apply_migrations(empty_database_url, migrations_dir=sql_copy)
    rollback_migrations(empty_database_url, count=2, migrations_dir=sql_copy)
    edited = sql_copy / f"{IMMUTABLE}.sql"
    edited.write_text(edited.read_text() + "\n-- reviewed again\n")

    apply_migrations(empty_database_url, migrations_dir=sql_copy)

    assert set(_states(empty_database_url, sql_copy).values()) == {"ok"}


def test_plain_yoyo_apply_is_reported_as_unrecorded_then_recorded(
    empty_database_url: str, sql_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _plain_yoyo("apply", empty_database_url, sql_copy)  # 0003 exercises `-- transactional: false`
    dsn = migration_url(empty_database_url).replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM _yoyo_migration").fetchone() == (len(_read(sql_copy)),)

    assert set(_states(empty_database_url, sql_copy).values()) == {"unrecorded"}
    args = ["verify", "--database-url", empty_database_url, "--migrations-dir", str(sql_copy)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "no checksum recorded" in out
    # Nothing was verified, so the summary must not say it was.
    assert f"0 applied migration(s) verified, {len(_read(sql_copy))} without a checksum" in out

    assert main([*args, "--record-missing"]) == 0
    out = capsys.readouterr().out
    assert f"recorded    {INDEX}: checksum " in out
    assert f"{len(_read(sql_copy))} checksum(s) recorded now" in out
    assert set(_states(empty_database_url, sql_copy).values()) == {"ok"}
    assert main(args) == 0
    assert f"{len(_read(sql_copy))} applied migration(s) verified on " in capsys.readouterr().out


def test_plain_yoyo_reapply_after_rollback_is_unrecorded_not_a_mismatch(
    empty_database_url: str, sql_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    apply_migrations(empty_database_url, migrations_dir=sql_copy)
    # Plain yoyo rolls back without deleting our checksum row, then applies an edited file.
    _plain_yoyo("rollback", empty_database_url, sql_copy, "--revision", INDEX)
    edited = sql_copy / f"{INDEX}.sql"
    edited.write_text(edited.read_text() + "\n-- reviewed again\n")
    _plain_yoyo("apply", empty_database_url, sql_copy)

    # The left-over checksum describes the earlier application: stale, so not compared with the file.
    assert _states(empty_database_url, sql_copy) == {"0001_create_sessions": "ok", IMMUTABLE: "ok", INDEX: "unrecorded"}
    args = ["verify", "--database-url", empty_database_url, "--migrations-dir", str(sql_copy)]
    assert main(args) == 0
    assert f"unrecorded  {INDEX}: no checksum recorded since it was last applied" in capsys.readouterr().out

    assert main([*args, "--record-missing"]) == 0  # replaces the stale checksum...
    assert set(_states(empty_database_url, sql_copy).values()) == {"ok"}
    edited.write_text(edited.read_text() + "-- and edited after that apply\n")
    assert _states(empty_database_url, sql_copy)[INDEX] == "mismatch"  # ...with the applied file's
