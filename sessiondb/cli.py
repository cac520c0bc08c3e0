"""The ``sessiondb`` command: migrate, status, rollback and bench."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from sqlalchemy.exc import DBAPIError

from sessiondb.database import DATABASE_URL_ENV
from sessiondb.errors import SessionDBError
from sessiondb.urls import describe_server, parse_database_url

if TYPE_CHECKING:
    from sessiondb.bench.command import BenchRequest
    from sessiondb.checksums import MigrationCheck

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130

Command = Callable[[argparse.Namespace, str, Console], int]


@contextlib.contextmanager
def _server_url(args: argparse.Namespace, console: Console) -> Iterator[str]:
    """``--database-url``, else ``DATABASE_URL``, else a throwaway embedded server."""
    url = args.database_url or os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        parse_database_url(url)  # fail fast with a clear error, before connecting
        yield url
        return
    from sessiondb.embedded import embedded_postgres

    console.print("[dim]no --database-url or DATABASE_URL: starting an embedded PostgreSQL[/dim]")
    with embedded_postgres() as server:
        yield server.url


def cmd_migrate(args: argparse.Namespace, url: str, console: Console) -> int:
    from sessiondb.migrations import apply_migrations

    applied = apply_migrations(url, break_lock=args.break_lock)
    if applied:
        console.print(f"applied {len(applied)} migration(s) on {describe_server(url)}: {', '.join(applied)}")
    else:
        console.print(f"{describe_server(url)} is up to date")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, url: str, console: Console) -> int:
    from sessiondb.migrations import migration_status

    rows = migration_status(url)
    if args.json:
        print(json.dumps([{**r, "applied_at": r["applied_at"] and r["applied_at"].isoformat()} for r in rows]))
        return EXIT_OK
    for row in rows:
        when = row["applied_at"].isoformat() if row["applied_at"] else "-"
        console.print(f"{'applied' if row['applied'] else 'pending':8} {when:32} {row['id']}")
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace, url: str, console: Console) -> int:
    from sessiondb.migrations import rollback_migrations

    rolled_back = rollback_migrations(url, count=args.count)
    if rolled_back:
        console.print(f"rolled back {len(rolled_back)} migration(s): {', '.join(rolled_back)}")
    else:
        console.print("nothing to roll back")
    return EXIT_OK


def _bench_request(args: argparse.Namespace) -> BenchRequest:
    from sessiondb.bench.command import BenchRequest

    return BenchRequest(
        workload=args.workload,
        concurrency=args.concurrency,
        configs=args.configs,
        ops=args.ops,
        rounds=args.rounds,
        quick=args.quick,
        json_path=Path(args.json) if args.json else None,
        plot_path=Path(args.plot) if args.plot else None,
    )


def precheck_bench(args: argparse.Namespace) -> None:
    """Output paths, matplotlib and the pool settings, before an embedded server is started for nothing."""
    from sessiondb.bench.command import check_request
    from sessiondb.settings import PoolSettings

    check_request(_bench_request(args))
    PoolSettings.from_env()


def cmd_bench(args: argparse.Namespace, url: str, console: Console) -> int:
    from sessiondb.bench.command import run_bench_command
    from sessiondb.migrations import apply_migrations

    request = _bench_request(args)
    apply_migrations(url)
    return run_bench_command(request, url, console)


def _parsed_by(parse: Callable[[str], object]) -> Callable[[str], object]:
    # argparse shows an ArgumentTypeError's text as the one-line error.
    def convert(text: str) -> object:
        try:
            return parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def cmd_purge(args: argparse.Namespace, url: str, console: Console) -> int:
    from sessiondb.database import Database
    from sessiondb.durations import parse_duration
    from sessiondb.purge import purge_sessions
    from sessiondb.settings import PoolSettings

    older_than = parse_duration(args.older_than)

    async def purge() -> int:
        db = Database(url, PoolSettings.from_env())  # SESSIONDB_PGBOUNCER=1 and friends apply here too
        try:
            async with db.session() as s:
                return await purge_sessions(s, older_than, args.batch_size, dry_run=args.dry_run)
        finally:
            await db.dispose()

    removed = asyncio.run(purge())
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {removed} session(s) older than {args.older_than} on {describe_server(url)}")
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, url: str, console: Console) -> int:
    from sessiondb.migrations import verify_migrations

    checks = verify_migrations(url, migrations_dir=args.migrations_dir, record_missing=args.record_missing)
    for check in checks:
        if args.record_missing and check.state == "unrecorded":
            print(f"recorded    {check.id}: checksum {check.current} (of the file as it is now)")
        else:
            print(check.describe())
    bad = [c for c in checks if not c.ok]
    if bad:
        print(f"sessiondb: error: {len(bad)} applied migration(s) differ from their files", file=sys.stderr)
        return EXIT_FAILURE
    print(f"{_count_by_state(checks, recorded_now=args.record_missing)} on {describe_server(url)}")
    return EXIT_OK


def _count_by_state(checks: list[MigrationCheck], *, recorded_now: bool) -> str:
    """'2 applied migration(s) verified, 1 without a checksum': an unrecorded one was not verified."""
    if not checks:
        return "no applied migrations"
    verified = sum(c.state == "ok" for c in checks)
    unrecorded = len(checks) - verified
    parts = [f"{verified} applied migration(s) verified"]
    if unrecorded:
        parts.append(f"{unrecorded} checksum(s) recorded now" if recorded_now else f"{unrecorded} without a checksum")
    return ", ".join(parts)


def cmd_check(args: argparse.Namespace, url: str, console: Console) -> int:
    from sessiondb.schema_check import check_schema

    differences = check_schema(url)
    for difference in differences:
        print(f"DRIFT {difference}")
    if differences:
        print(f"sessiondb: error: live schema differs from the model in {len(differences)} way(s)", file=sys.stderr)
        return EXIT_FAILURE
    print(f"schema on {describe_server(url)} matches the sessiondb model")
    return EXIT_OK


def _retention_age(text: str) -> str:
    """Validated at parse time (argparse prints the error); kept as text for messages."""
    from sessiondb.durations import parse_duration
    from sessiondb.purge import check_older_than

    try:
        check_older_than(parse_duration(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _batch_size(text: str) -> int:
    from sessiondb.purge import check_batch_size

    try:
        return check_batch_size(_positive_int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _given_url(text: str) -> str:
    # Given but empty (an unset shell variable, say): an error, never a fall back to DATABASE_URL's server.
    if not text.strip():
        raise argparse.ArgumentTypeError("is empty; leave it out to use $DATABASE_URL or an embedded server")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sessiondb", description=__doc__)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--database-url",
        metavar="URL",
        type=_given_url,
        help="postgresql://user:password@host:port/dbname (default: $DATABASE_URL, else an embedded server)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    migrate = commands.add_parser("migrate", parents=[common], help="apply pending migrations")
    migrate.add_argument(
        "--break-lock",
        action="store_true",
        help="delete yoyo's lock row left by a killed migrator, whatever its age, then migrate",
    )
    migrate.set_defaults(run=cmd_migrate)

    status = commands.add_parser("status", parents=[common], help="list migrations, applied or pending")
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.set_defaults(run=cmd_status)

    rollback = commands.add_parser("rollback", parents=[common], help="roll back the newest migrations")
    rollback.add_argument("--count", type=_positive_int, default=1, help="how many (default 1)")
    rollback.set_defaults(run=cmd_rollback)

    purge = commands.add_parser("purge", parents=[common], help="delete sessions older than a duration, in batches")
    purge.add_argument("--older-than", required=True, type=_retention_age, metavar="AGE", help="e.g. 30d, 12h, 90m")
    purge.add_argument(
        "--batch-size", type=_batch_size, default=5000, help="rows per transaction, 1 to 100000 (default 5000)"
    )
    purge.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
    purge.set_defaults(run=cmd_purge)

    verify = commands.add_parser("verify", parents=[common], help="detect migration files edited after being applied")
    verify.add_argument(
        "--record-missing",
        action="store_true",
        help="record checksums for migrations applied by plain yoyo (replaces stale ones, never a current one)",
    )
    verify.add_argument("--migrations-dir", type=Path, help="default: the package's sql/ folder")
    verify.set_defaults(run=cmd_verify)

    check = commands.add_parser("check", parents=[common], help="compare the live schema with the model")
    check.set_defaults(run=cmd_check)

    lint = commands.add_parser("lint", help="run squawk over the sql/ migrations (no database needed)")
    lint.add_argument("--migrations-dir", type=Path, help="default: the package's sql/ folder")
    lint.set_defaults(run=None)

    from sessiondb.bench import CONFIG_NAMES
    from sessiondb.bench.command import parse_concurrency, parse_configs

    bench = commands.add_parser(
        "bench", parents=[common], help="benchmark the session workload on every client configuration"
    )
    bench.add_argument(
        "--workload",
        choices=("crd", "churn"),
        default="crd",
        help="crd: create, read back, delete (default); churn: create, delete",
    )
    bench.add_argument(
        "--concurrency", type=_parsed_by(parse_concurrency), metavar="N,...", help="workers (default 1,4,16,64)"
    )
    bench.add_argument(
        "--configs",
        type=_parsed_by(parse_configs),
        metavar="NAME,...",
        help="any of: " + ",".join(CONFIG_NAMES) + " (default: all)",
    )
    bench.add_argument("--ops", type=_positive_int, help="operations per configuration and concurrency (default 5000)")
    bench.add_argument("--rounds", type=_positive_int, help="interleaved rounds the ops are split into (default 3)")
    bench.add_argument("--quick", action="store_true", help="c=16, 200 ops, one round: well under 20 s")
    bench.add_argument("--json", metavar="PATH", help="write one JSON object per run (config x concurrency) to PATH")
    bench.add_argument("--plot", metavar="PATH.png", help="plot throughput and p99 against concurrency (matplotlib)")
    bench.set_defaults(run=cmd_bench, precheck=precheck_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # soft_wrap: a line piped to a log (cron) stays one line rather than wrapping at 80 columns.
    console = Console(stderr=False, highlight=False, soft_wrap=True)
    if args.command == "lint":  # needs no database
        from sessiondb.lint import run_squawk

        try:
            return run_squawk(args.migrations_dir)
        except SessionDBError as error:
            print(f"sessiondb: error: {error}", file=sys.stderr)
            return EXIT_FAILURE
    command: Command = args.run
    try:
        if getattr(args, "precheck", None) is not None:
            args.precheck(args)
        with _server_url(args, console) as url:
            try:
                return command(args, url, console)
            except DBAPIError as error:
                # The server refused a statement (e.g. purge before `sessiondb migrate`): one line, no traceback.
                reason = (str(error.orig).strip() or type(error.orig).__name__).splitlines()[0]
                print(f"sessiondb: error: PostgreSQL at {describe_server(url)}: {reason}", file=sys.stderr)
                return EXIT_FAILURE
    except SessionDBError as error:
        print(f"sessiondb: error: {error}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("sessiondb: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
