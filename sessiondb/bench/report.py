"""Bench output: the terminal table, ``--json`` and ``--plot``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from sessiondb.bench.runner import BenchResult
from sessiondb.errors import ConfigurationError

PLOT_EXTRA_HINT = "pip install 'sessiondb[bench]'"


def _number(value: float | int | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def render_table(results: Sequence[BenchResult], environment: dict[str, Any], console: Console) -> None:
    steps = "create + delete" if environment["workload"] == "churn" else "create + read + delete"
    table = Table(
        title=f"{environment['workload']}: {steps} per op, each step committed "
        f"(PostgreSQL {environment['server_version']}, pgbouncer={environment['pgbouncer']})",
        title_justify="left",
    )
    columns = ["config", "c", "ops", "ops/s", "x pgbench", "p50 ms", "p95 ms", "p99 ms"]
    columns += ["conns opened", "checkouts", "wait ms", "server xacts"]
    for column in columns:
        table.add_column(column, justify="left" if column == "config" else "right", no_wrap=column == "config")
    for r in sorted(results, key=lambda r: (r.concurrency, -r.ops_per_s)):
        table.add_row(
            r.name,
            str(r.concurrency),
            str(r.ops),
            f"{r.ops_per_s:,.0f}",
            _number(r.fraction_of_pgbench, ".2f"),
            f"{r.p50_ms:.2f}",
            f"{r.p95_ms:.2f}",
            f"{r.p99_ms:.2f}",
            _number(r.connections_opened, "d"),
            _number(r.checkouts, "d"),
            _number(r.pool_wait_ms, ".3f"),
            _number(r.server_commits, "d"),
        )
    console.print(table)
    # Pools are sized per concurrency; show the largest run's (every run's is in the JSON "pool").
    widest = max((r.concurrency for r in results), default=0)
    for r in results:
        if r.concurrency == widest:
            console.print(f"[dim]{r.name} at c={widest}: {r.pool}[/dim]")


def write_json(results: Sequence[BenchResult], path: Path) -> None:
    """One object per run (configuration x concurrency), as a JSON list."""
    path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")


def write_plot(results: Sequence[BenchResult], path: Path) -> None:
    """Throughput and p99 against concurrency, one line per configuration."""
    plt = import_pyplot()
    figure, (throughput, p99) = plt.subplots(1, 2, figsize=(12, 5))
    for name in dict.fromkeys(r.name for r in results):
        runs = sorted((r for r in results if r.name == name), key=lambda r: r.concurrency)
        xs = [r.concurrency for r in runs]
        throughput.plot(xs, [r.ops_per_s for r in runs], marker="o", label=name)
        p99.plot(xs, [r.p99_ms for r in runs], marker="o", label=name)
    workload = results[0].workload if results else ""
    for axis, label in ((throughput, "ops/s"), (p99, "p99 latency (ms)")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrency (workers)")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    p99.set_yscale("log")
    throughput.set_title(f"throughput ({workload})")
    p99.set_title(f"p99 latency ({workload})")
    throughput.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def import_pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive backend, or a one-line ``ConfigurationError``."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigurationError(f"--plot needs matplotlib: {PLOT_EXTRA_HINT}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
