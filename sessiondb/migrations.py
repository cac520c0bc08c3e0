"""A Python face over yoyo-migrations, on the same ``sql/`` folder a DBA applies with ``yoyo apply``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import URL
from yoyo import read_migrations
from yoyo.connections import get_backend_class, parse_uri

from sessiondb.errors import DatabaseUnavailable, MigrationError
from sessiondb.urls import describe_server, migration_url

MIGRATION_TABLE = "_yoyo_migration"  # yoyo's default; yoyo.ini names it too
# pg_advisory_lock key: the lock dies with the connection, so a killed migrator never blocks others.
ADVISORY_LOCK_KEY = 0x5E5510DB
LOCK_WAIT_SECONDS = 60.0

_T = TypeVar("_T")
_PACKAGE_DIR = Path(__file__).resolve().parent


def default_migrations_dir() -> Path:
    """``sql/`` inside an installed package, else the repository's top-level ``sql/``."""
    for candidate in (_PACKAGE_DIR / "sql", _PACKAGE_DIR.parent / "sql"):
        if candidate.is_dir():
            return candidate
    raise MigrationError("cannot find the sql/ migrations folder")


def _read(migrations_dir: Path | None) -> Any:
    directory = migrations_dir or default_migrations_dir()
    if not Path(directory).is_dir():
        raise MigrationError(f"migrations folder {directory} does not exist")
    return read_migrations(str(directory))


@contextmanager
def _locked_backend(url: str | URL) -> Iterator[Any]:
    """A yoyo backend holding our advisory lock and yoyo's own lock row."""
    server = describe_server(url)
    parsed = parse_uri(migration_url(url))
    try:
        backend = get_backend_class(parsed.scheme)(parsed, MIGRATION_TABLE)
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {server}: {reason}") from None
    try:
        _take_advisory_lock(backend, server)
        backend.init_database()
        with backend.lock():
            yield backend
    finally:
        backend.connection.close()


def _take_advisory_lock(backend: Any, server: str) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    cursor = backend.connection.cursor()
    while True:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        if cursor.fetchone()[0]:
            return
        if time.monotonic() > deadline:
            raise MigrationError(
                f"another process has been migrating {server} for over {LOCK_WAIT_SECONDS:g}s; "
                "try again when it finishes"
            )
        time.sleep(0.2)


def _run(action: str, server: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except (MigrationError, DatabaseUnavailable):
        raise
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise MigrationError(f"{action} failed on {server}: {reason}") from error


def apply_migrations(url: str | URL, *, migrations_dir: Path | None = None) -> list[str]:
    """Apply every pending migration; return their ids in order (``[]`` when up to date).

    Safe to call from several processes at once: each migration is applied exactly once.
    """
    migrations = _read(migrations_dir)

    def apply() -> list[str]:
        with _locked_backend(url) as backend:
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
            return [m.id for m in pending]

    return _run("migration", describe_server(url), apply)


def rollback_migrations(url: str | URL, count: int = 1, *, migrations_dir: Path | None = None) -> list[str]:
    """Roll back the newest ``count`` applied migrations; return their ids, newest first."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    migrations = _read(migrations_dir)

    def rollback() -> list[str]:
        with _locked_backend(url) as backend:
            applied = backend.to_rollback(migrations)
            chosen = migrations.__class__(list(applied)[:count], migrations.post_apply)
            backend.rollback_migrations(chosen)
            return [m.id for m in chosen]

    return _run("rollback", describe_server(url), rollback)


def migration_status(url: str | URL, *, migrations_dir: Path | None = None) -> list[dict[str, Any]]:
    """One dict per migration file, in order: ``id``, ``applied`` (bool), ``applied_at`` (UTC or None)."""
    migrations = _read(migrations_dir)

    def status() -> list[dict[str, Any]]:
        with _locked_backend(url) as backend:
            backend.ensure_internal_schema_updated()
            rows = backend.execute(
                f"SELECT migration_hash, applied_at_utc FROM {backend.quote_identifier(MIGRATION_TABLE)}"
            ).fetchall()
            applied_at = {h: at.replace(tzinfo=UTC) for h, at in rows}
            return [
                {"id": m.id, "applied": m.hash in applied_at, "applied_at": applied_at.get(m.hash)} for m in migrations
            ]

    return _run("status", describe_server(url), status)
