"""Content checksums of applied migrations, so an edited migration file is caught (like Flyway ``validate``).

yoyo identifies a migration by its file name only, so a file edited after it was applied goes unnoticed.
``sessiondb migrate`` records the sha256 of each migration file's bytes in ``sessiondb_migration_checksum``,
in the same transaction in which yoyo marks it applied. ``verify_migrations`` compares them with the files.
Only the apply file is hashed: an edited ``.rollback.sql`` does not change what the database contains.

A checksum belongs to one application of its migration. ``sessiondb rollback`` deletes it; a plain
``yoyo rollback`` cannot, so a checksum recorded before the migration's current ``applied_at`` (yoyo's
``_yoyo_migration.applied_at_utc``) is stale: it describes an earlier application, and ``compare`` treats
it as ``unrecorded`` (which ``verify --record-missing`` then replaces). ``applied_at`` is the migrating
client's clock: a plain ``yoyo apply`` from a machine whose clock runs behind by more than the time since
the checksum was recorded is not noticed as a re-apply.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NamedTuple

CHECKSUM_TABLE = "sessiondb_migration_checksum"

CREATE_TABLE_SQL = f"""
CREATE TABLE IF NOT EXISTS {CHECKSUM_TABLE} (
    migration_id text PRIMARY KEY,
    sha256 text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    how text NOT NULL
)
"""

CheckState = Literal["ok", "mismatch", "unrecorded", "missing_file"]


class RecordedChecksum(NamedTuple):
    sha256: str
    recorded_at: datetime  # aware; never earlier than the application it was recorded for


@dataclass(frozen=True)
class MigrationCheck:
    """What ``verify`` found for one applied migration."""

    id: str
    state: CheckState
    recorded: str | None  # sha256 stored when it was applied
    current: str | None  # sha256 of the file now

    @property
    def ok(self) -> bool:
        """``unrecorded`` is not a failure: it is what a plain ``yoyo apply`` leaves."""
        return self.state in ("ok", "unrecorded")

    def describe(self) -> str:
        if self.state == "ok":
            return f"ok          {self.id}"
        if self.state == "unrecorded":
            return (
                f"unrecorded  {self.id}: no checksum recorded since it was last applied (by plain yoyo?); "
                f"current {self.current}"
            )
        if self.state == "missing_file":
            return f"MISSING     {self.id}: applied, but its file is gone from the migrations folder"
        return (
            f"MISMATCH    {self.id}: file changed after it was applied (recorded {self.recorded}, now {self.current})"
        )


def file_checksum(path: str | Path) -> str:
    """sha256 of the file's bytes, hex."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ensure_table(backend: Any) -> None:
    """Create the checksum table (idempotent). ``backend`` is a yoyo backend."""
    with backend.transaction():
        backend.execute(CREATE_TABLE_SQL)


def record(backend: Any, migration: Any, how: str, *, migration_table: str) -> None:
    """Store ``migration``'s checksum, replacing any; call once it is marked applied (when sessiondb applies
    it, in the same transaction).

    ``recorded_at`` is at least the migration's ``applied_at`` in ``migration_table`` (yoyo's): that is the
    migrating client's clock, read after ``now()`` (the server's transaction start), and a checksum
    recorded with it must not look older than the application it belongs to (``compare`` calls that stale).
    """
    applied_at = (
        f"SELECT max(applied_at_utc) AT TIME ZONE 'UTC' FROM {backend.quote_identifier(migration_table)} "
        "WHERE migration_id = :id"
    )
    backend.execute(
        f"INSERT INTO {CHECKSUM_TABLE} (migration_id, sha256, how, recorded_at) "
        f"VALUES (:id, :sha, :how, greatest(now(), ({applied_at}))) "
        "ON CONFLICT (migration_id) DO UPDATE "
        "SET sha256 = EXCLUDED.sha256, recorded_at = EXCLUDED.recorded_at, how = EXCLUDED.how",
        {"id": migration.id, "sha": file_checksum(migration.path), "how": how},
    )


def forget(backend: Any, migration_id: str) -> None:
    """Drop the checksum of a rolled-back migration."""
    backend.execute(f"DELETE FROM {CHECKSUM_TABLE} WHERE migration_id = :id", {"id": migration_id})


def recorded(backend: Any) -> dict[str, RecordedChecksum]:
    """``{migration_id: RecordedChecksum}`` as stored; ``{}`` when the table does not exist (nothing created)."""
    if CHECKSUM_TABLE not in backend.list_tables():
        return {}
    rows = backend.execute(f"SELECT migration_id, sha256, recorded_at FROM {CHECKSUM_TABLE}").fetchall()
    return {str(mid): RecordedChecksum(str(sha), at) for mid, sha, at in rows}


def compare(
    applied: dict[str, datetime], files: dict[str, Path], stored: dict[str, RecordedChecksum]
) -> list[MigrationCheck]:
    """One ``MigrationCheck`` per applied migration (``{id: applied_at}``, in the order applied).

    A stored checksum older than the migration's ``applied_at`` is stale (see the module docstring):
    reported as ``unrecorded``, never as a mismatch.
    """
    checks = []
    for mid, applied_at in applied.items():
        path = files.get(mid)
        current = file_checksum(path) if path is not None else None
        entry = stored.get(mid)
        was = entry.sha256 if entry is not None and entry.recorded_at >= applied_at else None
        state: CheckState
        if current is None:
            state = "missing_file"
        elif was is None:
            state = "unrecorded"
        elif was != current:
            state = "mismatch"
        else:
            state = "ok"
        checks.append(MigrationCheck(mid, state, was, current))
    return checks
