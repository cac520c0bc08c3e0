"""Fixtures for the micro-benchmarks: one embedded server and one event loop for the whole run.

Not part of the normal test run (``testpaths = ["tests"]``); run with ``pytest benchmarks/``.
Set ``SESSIONDB_BENCH_DATABASE_URL`` to measure against an existing, migrated server instead.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from sessiondb import apply_migrations
from sessiondb.embedded import embedded_postgres


@pytest.fixture(scope="session")
def bench_url() -> Iterator[str]:
    external = os.environ.get("SESSIONDB_BENCH_DATABASE_URL", "").strip()
    if external:
        apply_migrations(external)
        yield external
        return
    with embedded_postgres() as server:
        apply_migrations(server.url)
        yield server.url


@pytest.fixture(scope="session")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    # pytest-benchmark calls a plain function; every engine and pool lives on this one loop.
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()
