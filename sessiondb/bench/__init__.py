"""``sessiondb bench``: the session workload on every client configuration, side by side.

See ``benchmarks/README.md`` for how to run it and read the results.
"""

from sessiondb.bench.configs import CONFIG_NAMES, PGBENCH, PYTHON_CONFIGS
from sessiondb.bench.pgbench import find_pgbench
from sessiondb.bench.report import render_table, write_json, write_plot
from sessiondb.bench.runner import WORKLOADS, BenchOptions, BenchResult, plan, run_bench

__all__ = [
    "CONFIG_NAMES",
    "PGBENCH",
    "PYTHON_CONFIGS",
    "WORKLOADS",
    "BenchOptions",
    "BenchResult",
    "find_pgbench",
    "plan",
    "render_table",
    "run_bench",
    "write_json",
    "write_plot",
]
