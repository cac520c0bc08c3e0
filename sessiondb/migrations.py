"""A Python face over yoyo-migrations, on the same ``sql/`` folder a DBA applies with ``yoyo apply``."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from sqlalchemy.engine import URL
from yoyo import exceptions as yoyo_exceptions
from yoyo import internalmigrations, read_migrations
from yoyo.connections import get_backend_class, parse_uri

from sessiondb import checksums
from sessiondb.checksums import MigrationCheck
from sessiondb.errors import DatabaseUnavailable, MigrationError
from sessiondb.urls import describe_server, migration_url

MIGRATION_TABLE = "_yoyo_migration"  # yoyo's default; yoyo.ini names it too
# pg_advisory_lock key: the lock dies with the connection, so a killed migrator never blocks others.
ADVISORY_LOCK_KEY = 0x5E5510DB
LOCK_WAIT_SECONDS = 60.0
# Grace period for yoyo's own lock row (table ``yoyo_lock``). While we hold the advisory lock no other
# sessiondb process is migrating, so a row is either a live plain ``yoyo apply`` (which does not take our
# advisory lock) or the leftover of a killed process. Younger than this: assume the former and wait;
# older: assume the latter, delete it and log a warning. No migration of ours runs anywhere near 10 min
# except 0003 on a huge table; a DBA running that by hand should not run ``sessiondb migrate`` meanwhile.
STALE_LOCK_SECONDS = 600.0
BREAK_LOCK_HINT = "sessiondb migrate --break-lock"

log = logging.getLogger(__name__)

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


def _seconds(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return float(value)


@contextmanager
def _connected_backend(url: str | URL) -> Iterator[Any]:
    """A yoyo backend connected to ``url``, closed on exit: nothing locked, nothing created."""
    server = describe_server(url)
    parsed = parse_uri(migration_url(url))
    # psycopg prepares a statement once it has run 5 times, under per-connection names (_pg3_0, ...). Behind a
    # transaction-mode pooler such as PgBouncer those collide on shared server connections, and yoyo reports the
    # failing INSERT of its lock row as "Database locked". Migrations gain nothing from prepared statements, so
    # never prepare; yoyo opens the connections that run migration steps from these same arguments.
    parsed = parsed._replace(args={**parsed.args, "prepare_threshold": None})
    try:
        backend = get_backend_class(parsed.scheme)(parsed, MIGRATION_TABLE)
    except Exception as error:
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {server}: {_first_line(error)}") from None
    try:
        yield backend
    finally:
        backend.connection.close()


@contextmanager
def _read_only_backend(url: str | URL) -> Iterator[Any]:
    """A yoyo backend inside one read-only transaction: for status and verify, which must work for a role that
    may only read, never wait for a running migration, and change nothing (not even create yoyo's tables)."""
    with _connected_backend(url) as backend, backend.transaction(rollback_on_exit=True):
        # Transaction-scoped, unlike a session setting that would outlive us on a pooled server connection.
        # REPEATABLE READ: yoyo's table and the checksum table are read from one snapshot.
        backend.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield backend


@contextmanager
def _locked_backend(
    url: str | URL,
    *,
    lock_wait: float = LOCK_WAIT_SECONDS,
    stale_lock_after: float = STALE_LOCK_SECONDS,
    break_lock: bool = False,
) -> Iterator[Any]:
    """A yoyo backend holding our advisory lock and yoyo's own lock row.

    The advisory lock serialises sessiondb processes and dies with the connection, so a killed migrator
    never blocks the next one. yoyo's lock row (which a plain ``yoyo apply`` also takes) outlives a killed
    process: with the advisory lock held, a row older than ``stale_lock_after`` seconds (or any row, with
    ``break_lock``) is deleted with a warning; a younger one is waited for until ``lock_wait`` runs out.
    """
    lock_wait = _seconds(lock_wait, "lock_wait")
    stale_lock_after = _seconds(stale_lock_after, "stale_lock_after")
    server = describe_server(url)
    with _connected_backend(url) as backend:
        deadline = time.monotonic() + lock_wait
        _take_advisory_lock(backend, server, deadline, lock_wait)
        backend.init_database()
        checksums.ensure_table(backend)
        _clear_yoyo_lock(backend, server, deadline, stale_lock_after, break_lock)
        with _yoyo_lock_row(backend, server, timeout=max(1.0, deadline - time.monotonic())):
            yield backend


@contextmanager
def _yoyo_lock_row(backend: Any, server: str, timeout: float) -> Iterator[None]:
    """yoyo's ``backend.lock()``, failing with the real cause when its lock row cannot be inserted.

    yoyo retries any failed INSERT of its row until ``timeout``, then reports "Database locked" whatever the
    failure was (a failed BEGIN even leaves its transaction state wrong, so later attempts fail differently).
    Only a unique violation means the row exists; the first other database error is the cause to name.
    """
    failures: list[psycopg.Error] = []
    execute = backend.execute

    def execute_noting_failures(sql: str, params: Any = None) -> Any:
        try:
            return execute(sql, params)
        except psycopg.Error as error:
            failures.append(error)
            raise

    with contextlib.ExitStack() as held:
        backend.execute = execute_noting_failures
        try:
            held.enter_context(backend.lock(timeout=timeout))
        except yoyo_exceptions.LockTimeout as error:
            cause = next((f for f in failures if not isinstance(f, psycopg.errors.UniqueViolation)), None)
            if cause is not None:
                raise MigrationError(f"cannot take yoyo's lock row on {server}: {_first_line(cause)}") from None
            raise MigrationError(f"migrations on {server} are locked: {error}") from None
        finally:
            del backend.execute  # the class's own method again
        yield


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _take_advisory_lock(backend: Any, server: str, deadline: float, lock_wait: float) -> None:
    cursor = backend.connection.cursor()
    while True:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        got_it = cursor.fetchone()[0]
        # End the implicit transaction (the session-level lock survives it): an idle-in-transaction
        # connection would make the CREATE INDEX CONCURRENTLY of another migrator wait for it.
        backend.connection.commit()
        if got_it:
            return
        if time.monotonic() > deadline:
            raise MigrationError(
                f"another sessiondb process has been migrating {server} for over {lock_wait:g}s; "
                "try again when it finishes"
            )
        time.sleep(0.2)


def _clear_yoyo_lock(backend: Any, server: str, deadline: float, stale_after: float, break_lock: bool) -> None:
    """With the advisory lock held, delete a stale (or, with ``break_lock``, any) yoyo lock row."""
    table = backend.lock_table_quoted
    while True:
        with backend.transaction():
            row = backend.execute(
                f"SELECT pid, ctime, EXTRACT(EPOCH FROM (now() AT TIME ZONE 'UTC') - ctime) FROM {table}"
            ).fetchone()
        if row is None:
            return
        pid, since, age = row[0], row[1], float(row[2] or 0.0)
        since_text = since.replace(tzinfo=UTC).isoformat(timespec="seconds") if isinstance(since, datetime) else "?"
        if break_lock or age > stale_after:
            with backend.transaction():
                backend.execute(f"DELETE FROM {table} WHERE pid = :pid", {"pid": pid})
            reason = "as asked (--break-lock)" if break_lock else f"older than the {stale_after:g}s grace period"
            log.warning(
                "broke the yoyo migration lock on %s held by process %s since %s (%.0fs ago): %s",
                server,
                pid,
                since_text,
                age,
                reason,
            )
            continue
        if time.monotonic() > deadline:
            raise MigrationError(
                f"migrations on {server} are locked by process {pid} since {since_text} ({age:.0f}s ago; "
                f"treated as stale after {stale_after:g}s); if no migration is running there, "
                f"run `{BREAK_LOCK_HINT}`"
            )
        time.sleep(0.2)


def _run(action: str, server: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except (MigrationError, DatabaseUnavailable):
        raise
    except Exception as error:
        raise MigrationError(f"{action} failed on {server}: {_first_line(error)}") from error


def apply_migrations(
    url: str | URL,
    *,
    migrations_dir: Path | None = None,
    break_lock: bool = False,
    lock_wait: float = LOCK_WAIT_SECONDS,
    stale_lock_after: float = STALE_LOCK_SECONDS,
) -> list[str]:
    """Apply every pending migration; return their ids in order (``[]`` when up to date).

    Safe to call from several processes at once: each migration is applied exactly once. Each file's
    sha256 is recorded in the transaction that marks it applied (see ``verify_migrations``).
    ``lock_wait``: seconds to wait for another migrator before ``MigrationError``. ``stale_lock_after``:
    the grace period after which a leftover yoyo lock row is broken with a warning; ``break_lock=True``
    breaks it whatever its age (``sessiondb migrate --break-lock``).
    """
    migrations = _read(migrations_dir)
    lock = _lock_options(lock_wait, stale_lock_after, break_lock)

    server = describe_server(url)

    def apply() -> list[str]:
        with _locked_backend(url, **lock) as backend:
            pending = backend.to_apply(migrations)
            applied: list[str] = []
            for migration in pending:
                try:
                    backend.apply_one(migration, mark=False)
                    # Mark applied and record the checksum atomically: verify never sees one without the other.
                    with backend.transaction():
                        backend.mark_one(migration, log=False)
                        checksums.record(backend, migration, how="sessiondb migrate", migration_table=MIGRATION_TABLE)
                except (MigrationError, DatabaseUnavailable):
                    raise
                except Exception as error:
                    # Name the file, and what this run applied before it (that stays applied).
                    before = ", ".join(applied) if applied else "none"
                    raise MigrationError(
                        f"migration {migration.id} failed on {server}: {_first_line(error)} "
                        f"(applied before it in this run: {before})"
                    ) from error
                applied.append(migration.id)
            backend.run_post_apply(pending)
            return applied

    return _run("migration", server, apply)


def _lock_options(lock_wait: float, stale_lock_after: float, break_lock: bool) -> dict[str, Any]:
    # Validated here, before _run would turn a ValueError into a MigrationError.
    return {
        "lock_wait": _seconds(lock_wait, "lock_wait"),
        "stale_lock_after": _seconds(stale_lock_after, "stale_lock_after"),
        "break_lock": bool(break_lock),
    }


def rollback_migrations(url: str | URL, count: int = 1, *, migrations_dir: Path | None = None) -> list[str]:
    """Roll back the newest ``count`` applied migrations; return their ids, newest first."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    migrations = _read(migrations_dir)

    def rollback() -> list[str]:
        with _locked_backend(url) as backend:
            applied = backend.to_rollback(migrations)
            chosen = list(applied)[:count]
            for migration in chosen:
                backend.rollback_one(migration)
                with backend.transaction():
                    checksums.forget(backend, migration.id)
            return [m.id for m in chosen]

    return _run("rollback", describe_server(url), rollback)


def _applied(backend: Any) -> list[tuple[str, str, datetime]]:
    """``(migration_hash, migration_id, applied_at UTC)`` in the order applied; ``[]`` where yoyo never ran.

    Reads yoyo's table itself: yoyo's own accessors first create or upgrade its tables, which is a write.
    """
    version = internalmigrations.get_current_version(backend)
    if version == 0:
        return []
    if version < max(internalmigrations.schema_versions):
        raise MigrationError("yoyo's internal tables are from yoyo < 6; run `sessiondb migrate` once to upgrade them")
    rows = backend.execute(
        f"SELECT migration_hash, migration_id, applied_at_utc FROM {backend.quote_identifier(MIGRATION_TABLE)} "
        "ORDER BY applied_at_utc, migration_id"
    ).fetchall()
    return [(str(h), str(mid), at.replace(tzinfo=UTC)) for h, mid, at in rows]


def migration_status(url: str | URL, *, migrations_dir: Path | None = None) -> list[dict[str, Any]]:
    """One dict per migration file, in order: ``id``, ``applied`` (bool), ``applied_at`` (UTC or None).

    Read-only: takes no lock (so it never waits for a running migration), creates nothing and writes
    nothing, so a role that may only read (e.g. one granted ``pg_read_all_data``) can run it. Where yoyo
    never ran, every migration is pending.
    """
    migrations = _read(migrations_dir)

    def status() -> list[dict[str, Any]]:
        with _read_only_backend(url) as backend:
            applied_at = {h: at for h, _, at in _applied(backend)}
            return [
                {"id": m.id, "applied": m.hash in applied_at, "applied_at": applied_at.get(m.hash)} for m in migrations
            ]

    return _run("status", describe_server(url), status)


def verify_migrations(
    url: str | URL, *, migrations_dir: Path | None = None, record_missing: bool = False
) -> list[MigrationCheck]:
    """Compare each applied migration's recorded sha256 with its file now (like Flyway ``validate``).

    Read-only, like ``migration_status`` (no lock, nothing created or written). A migration applied by
    plain ``yoyo apply`` has no checksum (state ``unrecorded``); so does one re-applied by plain yoyo after
    a plain ``yoyo rollback``: a checksum recorded before the migration's current ``applied_at`` describes
    an earlier application and is ignored as stale. ``record_missing=True`` records the current file's
    checksum for those, replacing stale ones but never a current one; that writes, so it takes the
    migration lock and needs the rights ``apply_migrations`` needs.
    """
    migrations = _read(migrations_dir)
    by_id = {m.id: m for m in migrations}
    files = {m.id: Path(m.path) for m in migrations}

    def verify() -> list[MigrationCheck]:
        opened = _locked_backend(url) if record_missing else _read_only_backend(url)
        with opened as backend:
            applied = {mid: at for _, mid, at in _applied(backend)}
            checks = checksums.compare(applied, files, checksums.recorded(backend))
            if record_missing:
                with backend.transaction():
                    for check in checks:
                        if check.state == "unrecorded":
                            how = "sessiondb verify --record-missing"
                            checksums.record(backend, by_id[check.id], how=how, migration_table=MIGRATION_TABLE)
            return checks

    return _run("verify", describe_server(url), verify)
