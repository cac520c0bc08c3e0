"""``sessiondb bench``: turn command-line choices into a run, with a progress bar and the outputs."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sessiondb.bench.configs import CONFIG_NAMES, PGBENCH
from sessiondb.bench.pgbench import find_pgbench
from sessiondb.bench.report import import_pyplot, render_table, write_json, write_plot
from sessiondb.bench.runner import BenchOptions, plan, run_bench
from sessiondb.errors import ConfigurationError
from sessiondb.settings import PoolSettings
from sessiondb.urls import describe_server

DEFAULT_CONCURRENCY = (1, 4, 16, 64)
DEFAULT_OPS = 5000
DEFAULT_ROUNDS = 3
# --quick: one round at the concurrency the targets are quoted at, few ops; well under 20 s in all.
QUICK_CONCURRENCY = (16,)
QUICK_OPS = 200
QUICK_ROUNDS = 1
# Wide enough that configuration names and numbers are never cut when stdout is a file or a pipe.
NON_TTY_WIDTH = 160


@dataclass(frozen=True)
class BenchRequest:
    workload: str = "crd"  # the main job: create, read back, delete
    concurrency: tuple[int, ...] | None = None
    configs: tuple[str, ...] | None = None
    ops: int | None = None
    rounds: int | None = None
    quick: bool = False
    json_path: Path | None = None
    plot_path: Path | None = None


MAX_CONCURRENCY = 1000


def parse_concurrency(text: str) -> tuple[int, ...]:
    """``"1,4,16"`` -> ``(1, 4, 16)``; raises ``ValueError`` with a readable message."""
    values = []
    for part in text.split(","):
        part = part.strip()
        # [0-9], not str.isdigit(): that also accepts other scripts' digits and superscripts.
        value = int(part) if re.fullmatch(r"[0-9]{1,9}", part) else 0
        if value < 1:
            raise ValueError(f"concurrency must be whole numbers >= 1 separated by commas, got {text!r}")
        if value > MAX_CONCURRENCY:
            # Each worker holds its own connection: far beyond the server's max_connections (100 by
            # default), and thousands exhaust the client's file descriptors mid-run.
            raise ValueError(f"concurrency {value} is more than {MAX_CONCURRENCY} (one connection per worker)")
        values.append(value)
    return tuple(dict.fromkeys(values))


def parse_configs(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in CONFIG_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown configuration {', '.join(unknown) or text!r}; choose from: {','.join(CONFIG_NAMES)}")
    return names


PLOT_FORMATS = (".png", ".svg", ".pdf")


def _check_output_path(path: Path | None, flag: str) -> None:
    """Fail now if ``path`` cannot be written, rather than after the whole measurement."""
    if path is None:
        return
    if not path.parent.is_dir():
        raise ConfigurationError(f"{flag} {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise ConfigurationError(f"{flag} {path}: is a directory; give a file name")
    existed = path.exists()
    try:
        with path.open("a"):  # appends nothing: an existing file is left as it is until written
            pass
    except OSError as error:
        raise ConfigurationError(f"{flag} {path}: cannot write there ({error.strerror or error})") from None
    if not existed:
        path.unlink()


def _check_plot_format(path: Path | None) -> None:
    # matplotlib picks the format from the suffix, appends ".png" to a name without one, and refuses
    # others only when saving, after the run.
    if path is not None and path.suffix.lower() not in PLOT_FORMATS:
        raise ConfigurationError(f"--plot {path}: the file name must end in {', '.join(PLOT_FORMATS)}")


def check_request(request: BenchRequest) -> None:
    """Fail on a missing plotting library or output directory now, not after minutes of measuring."""
    _check_plot_format(request.plot_path)
    _check_output_path(request.json_path, "--json")
    _check_output_path(request.plot_path, "--plot")
    if request.plot_path is not None:
        import_pyplot()


def run_bench_command(request: BenchRequest, url: str, console: Console) -> int:
    check_request(request)
    if not console.is_terminal:
        console.width = max(console.width, NON_TTY_WIDTH)

    configs = request.configs or CONFIG_NAMES
    if PGBENCH in configs and find_pgbench() is None:
        console.print("[yellow]pgbench not found (bundled, PATH, /usr/lib/postgresql/*/bin): skipping it[/yellow]")
        configs = tuple(name for name in configs if name != PGBENCH)
    if not configs:
        raise ConfigurationError("no configuration left to run")
    ops = request.ops or (QUICK_OPS if request.quick else DEFAULT_OPS)
    rounds = request.rounds or (QUICK_ROUNDS if request.quick else DEFAULT_ROUNDS)
    options = BenchOptions(
        url=url,
        workload=request.workload,
        concurrencies=request.concurrency or (QUICK_CONCURRENCY if request.quick else DEFAULT_CONCURRENCY),
        configs=configs,
        ops=ops,
        rounds=min(rounds, ops),  # a round needs at least one operation: the report says how many ran
        pool=PoolSettings.from_env(),
    )
    console.print(
        f"bench on {describe_server(url)}: workload={options.workload}, {options.ops} ops per configuration "
        f"and concurrency ({options.rounds} interleaved round(s)), "
        f"concurrency {','.join(map(str, options.concurrencies))}"
    )
    total = sum(ops for _, _, ops in plan(options))
    with Progress(
        TextColumn("{task.description:<34}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        refresh_per_second=4,
    ) as progress:
        task = progress.add_task("warming up", total=total)
        current: list[tuple[str, int]] = []

        def advance(name: str, concurrency: int, done: int) -> None:
            if not current or current[0] != (name, concurrency):
                current[:] = [(name, concurrency)]
                progress.update(task, description=f"{name} c={concurrency}")
            progress.advance(task, done)

        results, environment = asyncio.run(run_bench(options, advance))
    render_table(results, environment, console)
    if request.json_path is not None:
        write_json(results, request.json_path)
        console.print(f"wrote {request.json_path}")
    if request.plot_path is not None:
        write_plot(results, request.plot_path)
        console.print(f"wrote {request.plot_path}")
    return 0
