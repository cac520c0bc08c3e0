"""Runs the configurations interleaved, in one process, against one server, and measures them.

For each concurrency the configurations take turns in ``rounds`` rounds of ``ops / rounds``
operations each, so slow drift of a shared machine spreads over all of them instead of favouring
whichever ran first. Each turn builds its pool, warms every connection up (not measured), then
times its share; counters are read as differences across the measured window only.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from sessiondb.bench.configs import PGBENCH, PYTHON_CONFIGS, BenchConfig
from sessiondb.bench.histogram import LatencyHistogram
from sessiondb.bench.pgbench import find_pgbench, run_pgbench
from sessiondb.bench.pgbench import protocol as pgbench_protocol
from sessiondb.errors import SessionDBError
from sessiondb.settings import PoolSettings
from sessiondb.urls import asyncpg_dsn

WORKLOADS = ("churn", "crd")


class BenchFailed(SessionDBError):
    """A configuration failed while being measured."""


Advance = Callable[[str, int, int], None]  # (config name, concurrency, completed ops)


@dataclass(frozen=True)
class BenchOptions:
    url: str
    workload: str = "crd"
    concurrencies: tuple[int, ...] = (1, 4, 16, 64)
    configs: tuple[str, ...] = ()
    ops: int = 5000
    rounds: int = 3
    pool: PoolSettings = field(default_factory=PoolSettings.from_env)


@dataclass
class BenchResult:
    """One configuration at one concurrency. ``None`` where a number does not apply (pgbench)."""

    name: str
    concurrency: int
    ops: int
    ops_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    connections_opened: int | None
    checkouts: int | None
    pool_wait_ms: float | None
    server_commits: int | None
    server_backends: int | None
    workload: str
    rounds: int
    elapsed_s: float
    fraction_of_pgbench: float | None
    pool: str
    pgbouncer: bool
    server_version: str
    peak_rss_mb: float


@dataclass
class _Totals:
    """Sums over the rounds of one configuration at one concurrency."""

    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    ops: int = 0
    elapsed_s: float = 0.0
    opened: int | None = 0
    checkouts: int | None = 0
    wait_ms: float | None = 0.0
    commits: int = 0
    backends: int = 0
    pool: str = ""

    def add_counters(self, opened: int | None, checkouts: int | None, wait_ms: float | None) -> None:
        self.opened = None if opened is None or self.opened is None else self.opened + opened
        self.checkouts = None if checkouts is None or self.checkouts is None else self.checkouts + checkouts
        self.wait_ms = None if wait_ms is None or self.wait_ms is None else self.wait_ms + wait_ms


class ServerMonitor:
    """A separate connection that reads the server's view: transactions and backends."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.peak_backends = 0
        self._sampler: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @classmethod
    async def connect(cls, url: str) -> ServerMonitor:
        # No statement cache: the monitor must also work through PgBouncer in transaction mode.
        return cls(await asyncpg.connect(asyncpg_dsn(url), statement_cache_size=0))

    async def server_version(self) -> str:
        return str(await self.conn.fetchval("SHOW server_version"))

    async def next_xid(self) -> int:
        # Reading the snapshot does not itself consume a transaction id (txid_current() would).
        return int(await self.conn.fetchval("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"))

    async def backends(self) -> int:
        # Client backends on this database, not counting the monitor itself.
        count = await self.conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return int(count)

    def start_sampling(self, every_s: float = 0.2) -> None:
        self.peak_backends = 0
        stop = self._stop = asyncio.Event()

        async def sample() -> None:
            # Stopped by the event, never cancelled: a cancelled query would leave the connection busy.
            while not stop.is_set():
                self.peak_backends = max(self.peak_backends, await self.backends())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), every_s)

        self._sampler = asyncio.create_task(sample())

    async def wait_until_settled(self, backends: int, timeout_s: float = 10.0, steady_s: float = 0.3) -> None:
        """Wait (bounded) until the previous turn's backends have exited: ``backends`` or fewer remain, or
        the count has stopped going down for ``steady_s`` (PgBouncer keeps its server connections).

        A turn that closes many connections (NullPool, the ORM default's overflow, pgbench) leaves the
        server tearing backends down for a moment; the next turn should not pay for that.
        """
        deadline = time.monotonic() + timeout_s
        count = await self.backends()
        last_drop = time.monotonic()
        while count > backends and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            now = await self.backends()
            if now < count:
                last_drop = time.monotonic()
            elif time.monotonic() - last_drop >= steady_s:
                return
            count = now

    async def stop_sampling(self) -> int:
        """Stop the sampler and return the most client backends it saw."""
        if self._sampler is not None:
            self._stop.set()
            await self._sampler
            self._sampler = None
        return self.peak_backends

    async def close(self) -> None:
        await self.stop_sampling()
        await self.conn.close()


async def _one_operation(config: BenchConfig, workload: str) -> None:
    session_id = await config.create()
    if workload == "crd":
        await config.read(session_id)
    await config.delete(session_id)


async def _measure_python(
    config: BenchConfig,
    options: BenchOptions,
    monitor: ServerMonitor,
    totals: _Totals,
    *,
    concurrency: int,
    ops: int,
    advance: Advance,
) -> None:
    await config.start(options.url, concurrency, options.pool)
    try:
        totals.pool = config.pool_description()
        for _ in range(2):  # warm-up: open every connection and fill statement caches
            await asyncio.gather(*(_one_operation(config, options.workload) for _ in range(concurrency)))
        opened_0, checkouts_0, wait_0 = config.counters()
        xid_0 = await monitor.next_xid()
        monitor.start_sampling()
        remaining = ops
        histogram = totals.histogram

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                started = time.perf_counter()
                await _one_operation(config, options.workload)
                histogram.record(time.perf_counter() - started)
                advance(config.name, concurrency, 1)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        totals.elapsed_s += time.perf_counter() - started
        peak = await monitor.stop_sampling()
        totals.backends = max(totals.backends, peak, await monitor.backends())
        totals.commits += await monitor.next_xid() - xid_0
        opened_1, checkouts_1, wait_1 = config.counters()
        totals.ops += ops
        totals.add_counters(_delta(opened_0, opened_1), _delta(checkouts_0, checkouts_1), _delta(wait_0, wait_1))
    finally:
        await config.stop()


def _delta(before: Any, after: Any) -> Any:
    return None if before is None or after is None else after - before


async def _measure_pgbench(
    options: BenchOptions,
    monitor: ServerMonitor,
    totals: _Totals,
    *,
    concurrency: int,
    ops: int,
    advance: Advance,
) -> None:
    binary = find_pgbench()
    assert binary is not None
    xid_0 = await monitor.next_xid()
    monitor.start_sampling()
    try:
        run = await asyncio.to_thread(
            run_pgbench,
            binary,
            options.url,
            workload=options.workload,
            concurrency=concurrency,
            ops=ops,
            pgbouncer=options.pool.pgbouncer,
        )
    finally:
        totals.backends = max(totals.backends, await monitor.stop_sampling())
    totals.commits += await monitor.next_xid() - xid_0
    totals.histogram.record_all(run.latencies_s)
    totals.ops += run.ops
    totals.elapsed_s += run.elapsed_s
    totals.add_counters(None, None, None)
    totals.pool = (
        f"pgbench --protocol={pgbench_protocol(options.pool.pgbouncer)}, "
        f"{concurrency} connections opened before its clock starts"
    )
    advance(PGBENCH, concurrency, run.ops)


def plan(options: BenchOptions) -> list[tuple[str, int, int]]:
    """``(config, concurrency, ops)`` turns in the order they run."""
    # Exactly options.ops per configuration and concurrency: the first rounds take the remainder.
    base, extra = divmod(options.ops, options.rounds)
    configs = list(options.configs)
    turns = []
    for concurrency in options.concurrencies:
        for round_ in range(options.rounds):
            ops = base + (1 if round_ < extra else 0)
            # Each round starts one configuration later, so none always runs right after the same
            # neighbour (one that churns connections leaves the server busy for a moment).
            shift = round_ % len(configs)
            if ops:
                turns += [(name, concurrency, ops) for name in configs[shift:] + configs[:shift]]
    return turns


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024, 1)


async def run_bench(options: BenchOptions, advance: Advance) -> tuple[list[BenchResult], dict[str, Any]]:
    """Measure every configuration at every concurrency; return results and the environment used."""
    monitor = await ServerMonitor.connect(options.url)
    try:
        version = await monitor.server_version()
        idle_backends = await monitor.backends()  # PgBouncer keeps its server connections: not zero there
        totals: dict[tuple[str, int], _Totals] = {}
        for name, concurrency, ops in plan(options):
            await monitor.wait_until_settled(idle_backends)
            bucket = totals.setdefault((name, concurrency), _Totals())
            try:
                if name == PGBENCH:
                    await _measure_pgbench(options, monitor, bucket, concurrency=concurrency, ops=ops, advance=advance)
                else:
                    config = PYTHON_CONFIGS[name]()
                    await _measure_python(
                        config, options, monitor, bucket, concurrency=concurrency, ops=ops, advance=advance
                    )
            except SessionDBError:
                raise
            except Exception as error:
                # One line naming the turn that failed (server gone, a wrong result), not a traceback.
                reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise BenchFailed(f"{name} at concurrency {concurrency}: {type(error).__name__}: {reason}") from error
    finally:
        await monitor.close()
    results = [_result(name, c, t, options, version) for (name, c), t in totals.items()]
    _add_fractions_of_pgbench(results)
    environment = {
        "server_version": version,
        "pgbouncer": options.pool.pgbouncer,
        "workload": options.workload,
        "rounds": options.rounds,
        "pool_settings": {name: getattr(options.pool, name) for name in options.pool.__dataclass_fields__},
        "python": sys.version.split()[0],
        "asyncpg": asyncpg.__version__,
    }
    return results, environment


def _result(name: str, concurrency: int, t: _Totals, options: BenchOptions, version: str) -> BenchResult:
    return BenchResult(
        name=name,
        concurrency=concurrency,
        ops=t.ops,
        ops_per_s=round(t.ops / t.elapsed_s, 1) if t.elapsed_s > 0 else 0.0,
        p50_ms=round(t.histogram.percentile_ms(0.50), 3),
        p95_ms=round(t.histogram.percentile_ms(0.95), 3),
        p99_ms=round(t.histogram.percentile_ms(0.99), 3),
        connections_opened=t.opened,
        checkouts=t.checkouts,
        pool_wait_ms=None if t.wait_ms is None or not t.checkouts else round(t.wait_ms / t.checkouts, 4),
        server_commits=t.commits,
        server_backends=t.backends,
        workload=options.workload,
        rounds=options.rounds,
        elapsed_s=round(t.elapsed_s, 3),
        fraction_of_pgbench=None,
        pool=t.pool,
        pgbouncer=options.pool.pgbouncer,
        server_version=version,
        peak_rss_mb=_peak_rss_mb(),
    )


def _add_fractions_of_pgbench(results: Sequence[BenchResult]) -> None:
    reference = {r.concurrency: r.ops_per_s for r in results if r.name == PGBENCH and r.ops_per_s > 0}
    for r in results:
        if r.concurrency in reference:
            r.fraction_of_pgbench = round(r.ops_per_s / reference[r.concurrency], 3)
