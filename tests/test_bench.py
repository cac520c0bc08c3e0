"""``sessiondb bench``, run as a user would (a subprocess), plus its pure parts. No timings asserted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from sessiondb.bench import CONFIG_NAMES, PGBENCH, BenchOptions, find_pgbench, plan
from sessiondb.bench.histogram import LatencyHistogram
from sessiondb.urls import asyncpg_dsn

SESSIONDB = str(Path(sys.executable).with_name("sessiondb"))
POOLED = ("raw-asyncpg-autocommit", "raw-asyncpg-transaction", "sessiondb-session", "sessiondb-fast")
RESULT_TYPES: dict[str, Any] = {
    "name": str,
    "concurrency": int,
    "ops": int,
    "ops_per_s": float,
    "p50_ms": float,
    "p95_ms": float,
    "p99_ms": float,
    "connections_opened": (int, type(None)),
    "checkouts": (int, type(None)),
    "pool_wait_ms": (float, type(None)),
    "server_commits": (int, type(None)),
    "server_backends": (int, type(None)),
    "workload": str,
    "rounds": int,
    "elapsed_s": float,
    "fraction_of_pgbench": (float, type(None)),
    "pool": str,
    "pgbouncer": bool,
    "server_version": str,
    "peak_rss_mb": float,
}


def bench(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    environment.update(env or {})
    return subprocess.run(
        [SESSIONDB, "bench", *args], capture_output=True, text=True, timeout=240, env=environment, check=False
    )


def test_json_has_one_object_per_config_and_concurrency_with_the_documented_schema(
    database_url: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench.json"
    ops = 24
    result = bench("--database-url", database_url, "--concurrency", "1,3", "--ops", str(ops), "--rounds", "2",
                   "--workload", "churn", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())
    expected = set(CONFIG_NAMES) if find_pgbench() else set(CONFIG_NAMES) - {PGBENCH}
    assert {(r["name"], r["concurrency"]) for r in runs} == {(n, c) for n in expected for c in (1, 3)}
    assert len(runs) == 2 * len(expected)
    for run in runs:
        assert set(run) == set(RESULT_TYPES), run
        for key, kind in RESULT_TYPES.items():
            assert isinstance(run[key], kind), (key, run[key])
        assert run["workload"] == "churn" and run["pgbouncer"] is False and run["server_version"]
        assert run["ops_per_s"] > 0
        assert run["ops"] == ops if run["name"] != PGBENCH else run["ops"] >= ops  # pgbench: whole rounds per client
        assert 0 < run["p50_ms"] <= run["p95_ms"] <= run["p99_ms"]
        # Every create and every delete commits its own write transaction on the server.
        assert run["server_commits"] >= 2 * run["ops"]
        if run["name"] != PGBENCH:
            # One checkout per step, counted in the measured window only (warm-up excluded).
            assert run["checkouts"] == 2 * run["ops"], run
        if run["name"] in POOLED:
            assert run["connections_opened"] == 0, run
        if run["name"] == "sessiondb-nullpool":
            assert run["connections_opened"] == run["checkouts"], run
    if PGBENCH in expected:
        reference = {r["concurrency"]: r["ops_per_s"] for r in runs if r["name"] == PGBENCH}
        for run in runs:
            assert run["fraction_of_pgbench"] == pytest.approx(
                run["ops_per_s"] / reference[run["concurrency"]], abs=6e-4
            )
    # The configuration used is reported on the terminal too.
    assert "PostgreSQL" in result.stdout and "pgbouncer=False" in result.stdout
    assert "PoolSettings(size=3, max_overflow=0" in result.stdout


def test_default_workload_creates_reads_back_and_deletes(database_url: str, tmp_path: Path) -> None:
    # The main job (no --workload): create a session, read it back, delete it.
    out = tmp_path / "crd.json"
    configs = "sessiondb-session,sessiondb-fast,raw-asyncpg-transaction"
    result = bench("--database-url", database_url, "--concurrency", "2", "--ops", "10",
                   "--configs", configs, "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())
    assert {r["name"] for r in runs} == {"sessiondb-session", "sessiondb-fast", "raw-asyncpg-transaction"}
    for run in runs:
        assert run["workload"] == "crd"
        assert run["checkouts"] == 3 * run["ops"], run


def test_quick_prints_every_configuration_and_writes_json_and_png(database_url: str, tmp_path: Path) -> None:
    out, png = tmp_path / "quick.json", tmp_path / "quick.png"
    result = bench("--quick", "--database-url", database_url, "--json", str(out), "--plot", str(png))
    assert result.returncode == 0, result.stderr
    # Nothing logged either: e.g. NullPool closing each connection on return must not fail in the pool.
    assert "Traceback" not in result.stderr and "Exception closing" not in result.stderr, result.stderr[-2000:]
    names = {r["name"] for r in json.loads(out.read_text())}
    assert names == (set(CONFIG_NAMES) if find_pgbench() else set(CONFIG_NAMES) - {PGBENCH})
    # stdout is a pipe here: names must still appear whole in the table, not cut to "sessiondb-nu…".
    for name in names:
        assert f" {name} " in result.stdout, result.stdout
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert png.stat().st_size > 10_000


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "concurrency must be whole numbers >= 1"),
        (["--concurrency", "4,x"], "concurrency must be whole numbers >= 1"),
        (["--concurrency", "\u0664"], "concurrency must be whole numbers >= 1"),  # ARABIC-INDIC DIGIT FOUR
        # Used to flood stderr with thousands of asyncio errors, then fail on "Too many open files".
        (["--concurrency", "16,99999"], "concurrency 99999 is more than 1000 (one connection per worker)"),
        (["--configs", "sessiondb-session,nope"], "unknown configuration 'nope'; choose from: raw-asyncpg-autocommit"),
        (["--workload", "read"], "invalid choice: 'read'"),
        (["--ops", "-5"], "expected a number >= 1"),
    ],
)
def test_bad_flags_are_one_clear_usage_error(args: list[str], message: str) -> None:
    result = bench(*args, "--database-url", "postgresql://u@127.0.0.1:1/db")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error_lines) == 1 and message in error_lines[0], result.stderr


@pytest.mark.parametrize(
    ("flag", "name", "message"),
    [
        ("--json", "missing/x.json", "directory {tmp}/missing does not exist"),
        # These used to fail with a traceback after the whole run:
        ("--json", ".", "is a directory; give a file name"),
        ("--json", "/proc/x.json", "cannot write there"),
        ("--plot", "out.xyz", "the file name must end in .png, .svg, .pdf"),
        ("--plot", "out", "the file name must end in .png, .svg, .pdf"),  # was written as out.png
    ],
)
def test_unwritable_output_fails_before_measuring(tmp_path: Path, flag: str, name: str, message: str) -> None:
    path = tmp_path / name  # an absolute name stays as it is
    # Port 1 is unreachable: reaching it would be a different error, so this proves the check runs first.
    result = bench("--database-url", "postgresql://u@127.0.0.1:1/db", flag, str(path))
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"sessiondb: error: {flag} {path}: {message.format(tmp=tmp_path)}")
    assert not (tmp_path / "out.png").exists()


def test_plot_without_matplotlib_names_the_extra(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow" / "matplotlib"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('simulated: not installed')\n")
    result = bench("--database-url", "postgresql://u@127.0.0.1:1/db", "--plot", str(tmp_path / "p.png"),
                   env={"PYTHONPATH": str(shadow.parent)})  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "sessiondb: error: --plot needs matplotlib: pip install 'sessiondb[bench]'"
    ]


def test_rounds_interleave_and_rotate_the_configurations_with_exact_ops() -> None:
    # Each round starts one configuration later: none always follows the same neighbour. The ops of
    # the rounds add up to --ops exactly.
    options = BenchOptions(url="postgresql://h/db", concurrencies=(1, 8), configs=("a", "b", "c"), ops=10, rounds=3)
    assert plan(options) == [
        ("a", 1, 4), ("b", 1, 4), ("c", 1, 4), ("b", 1, 3), ("c", 1, 3), ("a", 1, 3), ("c", 1, 3), ("a", 1, 3),
        ("b", 1, 3),
        ("a", 8, 4), ("b", 8, 4), ("c", 8, 4), ("b", 8, 3), ("c", 8, 3), ("a", 8, 3), ("c", 8, 3), ("a", 8, 3),
        ("b", 8, 3),
    ]  # fmt: skip


def test_histogram_percentiles_are_within_one_percent() -> None:
    histogram = LatencyHistogram()
    histogram.record_all(i / 1000 for i in range(1, 1001))  # 1 ms .. 1000 ms
    assert histogram.count == 1000
    assert histogram.percentile_ms(0.50) == pytest.approx(500, rel=0.01)
    assert histogram.percentile_ms(0.99) == pytest.approx(990, rel=0.01)
    assert histogram.percentile_ms(1.0) == pytest.approx(1000, rel=0.01)
    assert LatencyHistogram().percentile_ms(0.5) == 0.0


def test_histogram_memory_does_not_grow_with_samples() -> None:
    few, many = LatencyHistogram(), LatencyHistogram()
    few.record_all(0.001 + (i % 100) / 10_000 for i in range(1_000))
    many.record_all(0.001 + (i % 100) / 10_000 for i in range(100_000))
    assert len(many._counts) == len(few._counts)


async def test_a_failing_configuration_is_one_line_naming_it(database_url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await conn.execute(
            "CREATE FUNCTION refuse_delete() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'deletes are disabled here'; END $$; "
            "CREATE TRIGGER refuse_delete BEFORE DELETE ON sessions FOR EACH ROW EXECUTE FUNCTION refuse_delete()"
        )
    finally:
        await conn.close()
    result = bench("--database-url", database_url, "--concurrency", "1", "--ops", "3", "--configs", "sessiondb-fast")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "sessiondb: error: sessiondb-fast at concurrency 1: RaiseError: deletes are disabled here"
    ]


def test_more_rounds_than_ops_reports_the_rounds_that_ran(database_url: str, tmp_path: Path) -> None:
    # `--ops 2 --rounds 5` ran two rounds (a round needs an operation) but reported five.
    out = tmp_path / "bench.json"
    result = bench("--database-url", database_url, "--concurrency", "1", "--ops", "2", "--rounds", "5",
                   "--configs", "sessiondb-fast", "--json", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    [run] = json.loads(out.read_text())
    assert (run["ops"], run["rounds"]) == (2, 2)


def test_bad_pool_setting_fails_before_an_embedded_server_is_started() -> None:
    result = bench("--quick", env={"SESSIONDB_POOL_SIZE": "abc"})  # no URL: would start a server first
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["sessiondb: error: SESSIONDB_POOL_SIZE='abc' is not a valid int"]
    assert "starting an embedded PostgreSQL" not in result.stdout


def test_unwritable_output_fails_before_an_embedded_server_is_started(tmp_path: Path) -> None:
    result = bench("--quick", "--json", str(tmp_path / "missing" / "x.json"))  # no URL: would start a server
    assert result.returncode == 1
    assert "starting an embedded PostgreSQL" not in result.stdout
    assert result.stderr.strip().splitlines()[-1].endswith(f"directory {tmp_path / 'missing'} does not exist")
