"""Probes for the fault tests: look at and act on the server from a connection outside the pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg

from sessiondb.urls import asyncpg_dsn

APPLICATION_NAME = "sessiondb"


async def backend_states(url: str, application_name: str = APPLICATION_NAME) -> list[tuple[int, str, str | None]]:
    """``(pid, state, wait_event_type)`` of every backend the pool under test holds on ``url``'s database."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch(
            "SELECT pid, state, wait_event_type FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
            application_name,
        )
    finally:
        await conn.close()
    return [(row["pid"], row["state"] or "", row["wait_event_type"]) for row in rows]


async def terminate_backends(url: str, application_name: str = APPLICATION_NAME) -> int:
    """``pg_terminate_backend`` every backend of the pool under test; how many were terminated."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        killed = await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
            application_name,
        )
    finally:
        await conn.close()
    return int(killed)


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, attempts: int = 200) -> None:
    """Poll ``condition`` until it holds (the server's view updates asynchronously); fail naming ``what``."""
    for _ in range(attempts):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def no_backend_in_transaction(url: str) -> bool:
    return not any(state.startswith("idle in transaction") for _, state, _ in await backend_states(url))


async def backend_gone(url: str, pid: int) -> bool:
    return pid not in [p for p, _, _ in await backend_states(url)]


async def terminate_backend(url: str, pid: int) -> None:
    """``pg_terminate_backend(pid)`` and wait until the server has let it go."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()
    await eventually(lambda: backend_gone(url, pid), f"backend {pid} exits")
