"""``python -m examples.service``: run the example under uvicorn.

With ``DATABASE_URL`` set, serve against that database (migrate it first with ``sessiondb migrate``).
Without it, start an embedded throwaway PostgreSQL, apply the migrations, and serve against that; the
server and its data are removed again on Ctrl-C or SIGTERM. Exits 0 after a clean shutdown.
"""

from __future__ import annotations

import argparse
import os
import sys

import uvicorn
from fastapi import FastAPI

from examples.service.app import create_app
from sessiondb import SessionDBError, apply_migrations
from sessiondb.database import DATABASE_URL_ENV
from sessiondb.embedded import embedded_postgres, sigterm_as_keyboard_interrupt
from sessiondb.urls import parse_database_url


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m examples.service", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=5.0,
        help="seconds shutdown waits for open requests and event streams before closing them (default: %(default)s)",
    )
    return parser.parse_args(argv)


def serve(app: FastAPI, args: argparse.Namespace) -> bool:
    """Serve until SIGINT/SIGTERM; False if the app failed to start."""
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        # Event streams never end by themselves: bound how long shutdown waits for them.
        timeout_graceful_shutdown=args.graceful_timeout,
    )
    server = uvicorn.Server(config)
    server.run()
    return bool(server.started)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    app = create_app()  # before starting any server: a broken app should fail fast
    url = os.environ.get(DATABASE_URL_ENV, "").strip()
    if url:
        try:
            parse_database_url(url)  # one line now, not a traceback from the lifespan under uvicorn
        except SessionDBError as error:
            print(f"examples.service: error: {DATABASE_URL_ENV}: {error}", file=sys.stderr)
            return 1
    started = True
    try:
        with sigterm_as_keyboard_interrupt():
            if url:
                started = serve(app, args)
            else:
                with embedded_postgres() as server:
                    applied = apply_migrations(server.url)
                    print(f"embedded PostgreSQL ready; migrations applied: {applied or 'none'}", file=sys.stderr)
                    os.environ[DATABASE_URL_ENV] = server.url
                    started = serve(app, args)
    except KeyboardInterrupt:
        pass
    return 0 if started else 1


if __name__ == "__main__":
    sys.exit(main())
