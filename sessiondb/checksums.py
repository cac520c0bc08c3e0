"""Content checksums of applied migrations, so an edited migration file is caught (like Flyway ``validate``).

yoyo identifies a migration by its file name only, so a file edited after it was applied goes unnoticed.
``sessiondb migrate`` records the sha256 of each migration file's bytes in ``sessiondb_migration_checksum``,
in the same transaction in which yoyo marks it applied. ``verify_migrations`` compares them with the files.
Only the apply file is hashed: an edited ``.rollback.sql`` does not change what the database contains.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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
            return f"unrecorded  {self.id}: no checksum recorded (applied by plain yoyo?); current {self.current}"
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


def record(backend: Any, migration: Any, how: str) -> None:
    """Store ``migration``'s checksum; call inside the transaction that marks it applied."""
    backend.execute(
        f"INSERT INTO {CHECKSUM_TABLE} (migration_id, sha256, how) VALUES (:id, :sha, :how) "
        "ON CONFLICT (migration_id) DO UPDATE SET sha256 = EXCLUDED.sha256, recorded_at = now(), how = EXCLUDED.how",
        {"id": migration.id, "sha": file_checksum(migration.path), "how": how},
    )


def forget(backend: Any, migration_id: str) -> None:
    """Drop the checksum of a rolled-back migration."""
    backend.execute(f"DELETE FROM {CHECKSUM_TABLE} WHERE migration_id = :id", {"id": migration_id})


def recorded(backend: Any) -> dict[str, str]:
    """``{migration_id: sha256}`` as stored."""
    rows = backend.execute(f"SELECT migration_id, sha256 FROM {CHECKSUM_TABLE}").fetchall()
    return {str(mid): str(sha) for mid, sha in rows}


def compare(applied_ids: list[str], files: dict[str, Path], stored: dict[str, str]) -> list[MigrationCheck]:
    """One ``MigrationCheck`` per applied migration, in ``applied_ids`` order."""
    checks = []
    for mid in applied_ids:
        path = files.get(mid)
        current = file_checksum(path) if path is not None else None
        was = stored.get(mid)
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
