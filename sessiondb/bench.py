"""``sessiondb bench``: concurrent create/read/delete through the public API vs raw asyncpg."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import asyncpg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from sessiondb.database import Database
from sessiondb.queries import create_session, delete_session, get_session
from sessiondb.settings import PoolSettings
from sessiondb.urls import asyncpg_dsn


@dataclass(frozen=True)
class BenchResult:
    name: str
    concurrency: int
    ops: int
    ops_per_s: float
    p50_ms: float
    p99_ms: float
    connections_opened: int
    checkouts: int


class BenchTarget(Protocol):
    name: str

    async def start(self, url: str, concurrency: int) -> None: ...
    async def operation(self) -> None: ...
    def counters(self) -> tuple[int, int]: ...  # (connections_opened, checkouts)
    async def stop(self) -> None: ...


class SessionDBTarget:
    """The public API: one ``db.session()`` per step, each committed."""

    name = "sessiondb-session"

    async def start(self, url: str, concurrency: int) -> None:
        self.db = Database(url, PoolSettings.from_env(size=concurrency, max_overflow=0))

    async def operation(self) -> None:
        async with self.db.session() as s:
            created = await create_session(s)
        async with self.db.session() as s:
            found = await get_session(s, created.id)
        async with self.db.session() as s:
            deleted = await delete_session(s, created.id)
        if found is None or not deleted:
            raise AssertionError(f"session {created.id} was not read back and deleted")

    def counters(self) -> tuple[int, int]:
        stats = self.db.pool_stats()
        return int(stats["connections_opened"]), int(stats["checkouts"])

    async def stop(self) -> None:
        await self.db.dispose()


class RawAsyncpgTarget:
    """The reference: the same three statements on a plain ``asyncpg.create_pool``."""

    name = "raw-asyncpg"

    async def start(self, url: str, concurrency: int) -> None:
        self.opened = 0
        self.checkouts = 0

        async def on_connect(_: asyncpg.Connection) -> None:
            self.opened += 1

        self.pool = await asyncpg.create_pool(
            asyncpg_dsn(url), min_size=concurrency, max_size=concurrency, init=on_connect
        )

    async def operation(self) -> None:
        async with self.pool.acquire() as conn:
            self.checkouts += 1
            session_id = await conn.fetchval("INSERT INTO sessions DEFAULT VALUES RETURNING id")
        async with self.pool.acquire() as conn:
            self.checkouts += 1
            found = await conn.fetchrow("SELECT id, created_at FROM sessions WHERE id = $1", session_id)
        async with self.pool.acquire() as conn:
            self.checkouts += 1
            status = await conn.execute("DELETE FROM sessions WHERE id = $1", session_id)
        if found is None or status != "DELETE 1":
            raise AssertionError(f"session {session_id} was not read back and deleted")

    def counters(self) -> tuple[int, int]:
        return self.opened, self.checkouts

    async def stop(self) -> None:
        await self.pool.close()


TARGETS: dict[str, type[BenchTarget]] = {
    SessionDBTarget.name: SessionDBTarget,
    RawAsyncpgTarget.name: RawAsyncpgTarget,
}


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * len(sorted_values)) - 1))
    return sorted_values[index]


async def run_target(
    target: BenchTarget, url: str, *, concurrency: int, ops: int, progress: Progress | None = None
) -> BenchResult:
    """Warm every connection up, then time ``ops`` operations spread over ``concurrency`` workers."""
    await target.start(url, concurrency)
    try:
        await asyncio.gather(*(target.operation() for _ in range(concurrency)))
        opened_before, checkouts_before = target.counters()
        latencies: list[float] = []
        remaining = ops
        task_id = progress.add_task(f"{target.name} c={concurrency}", total=ops) if progress else None

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                await target.operation()
                latencies.append(time.perf_counter() - started)
                if progress is not None and task_id is not None:
                    progress.advance(task_id)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        opened_after, checkouts_after = target.counters()
    finally:
        await target.stop()
    latencies.sort()
    return BenchResult(
        name=target.name,
        concurrency=concurrency,
        ops=ops,
        ops_per_s=round(ops / elapsed, 1),
        p50_ms=round(statistics.median(latencies) * 1000, 3),
        p99_ms=round(_percentile(latencies, 0.99) * 1000, 3),
        connections_opened=opened_after - opened_before,
        checkouts=checkouts_after - checkouts_before,
    )


async def run_bench(
    url: str, *, concurrency: int, ops: int, targets: Sequence[str], console: Console
) -> list[BenchResult]:
    results = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        for name in targets:
            results.append(await run_target(TARGETS[name](), url, concurrency=concurrency, ops=ops, progress=progress))
    return results


def render_table(results: Sequence[BenchResult], console: Console) -> None:
    table = Table(title="create + read + delete per op")
    for column in ("config", "workers", "ops", "ops/s", "p50 ms", "p99 ms", "conns opened", "checkouts"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for r in results:
        table.add_row(
            r.name,
            str(r.concurrency),
            str(r.ops),
            f"{r.ops_per_s:,.0f}",
            f"{r.p50_ms:.2f}",
            f"{r.p99_ms:.2f}",
            str(r.connections_opened),
            str(r.checkouts),
        )
    console.print(table)


def write_json(results: Sequence[BenchResult], path: Path) -> None:
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


def results_as_dicts(results: Sequence[BenchResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
