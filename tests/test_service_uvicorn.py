"""The FastAPI example as users run it: ``python -m examples.service`` under uvicorn, over loopback."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_LIMIT_SECONDS = 120.0  # hang guards only; an embedded initdb on a busy CI box is slow
EXIT_LIMIT_SECONDS = 60.0


def unused_local_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_closed(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def processes_mentioning(needle: str) -> list[int]:
    """Pids of live processes whose command line contains ``needle``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # exited while we looked
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def wait_until_healthy(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the example exited with {process.returncode} before serving:\n{log.read_text()}")
        try:
            if httpx.get(f"{base_url}/healthz", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the example did not become healthy:\n{log.read_text()}")


def exercise(base_url: str) -> None:
    """The endpoints over real HTTP, ending with an event stream that stays open."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        created = client.post("/sessions")
        assert created.status_code == 201
        body = created.json()
        assert client.get(f"/sessions/{body['id']}").json() == body
        assert client.get("/sessions/not-a-uuid").status_code == 422
        assert client.get(f"/sessions/{uuid.uuid4()}").status_code == 404

        with client.stream("GET", f"/sessions/{body['id']}/age", params={"events": 2, "interval": 0.05}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            data = [line for line in stream.iter_lines() if line.startswith("data: ")]
        assert [json.loads(line.removeprefix("data: "))["id"] for line in data] == [body["id"]] * 2

        assert client.delete(f"/sessions/{body['id']}").status_code == 204
        assert client.delete(f"/sessions/{body['id']}").status_code == 404


def open_stream_then_stop(base_url: str, process: subprocess.Popen[bytes], stop_with: signal.Signals) -> int:
    """Signal the server while a client is mid-stream (streams never end by themselves); its exit code."""
    with httpx.Client(base_url=base_url, timeout=30) as client:
        sid = client.post("/sessions").json()["id"]
        with client.stream("GET", f"/sessions/{sid}/age", params={"interval": 0.1}) as stream:
            lines = stream.iter_lines()
            assert next(lines) == "event: age"
            process.send_signal(stop_with)
            return process.wait(timeout=EXIT_LIMIT_SECONDS)


def start_example(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "examples.service", "--port", str(port), "--graceful-timeout", "1"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def stopped_at_exit() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Kill whatever a failing test left running."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_example_serves_over_loopback_and_stops_cleanly_on_sigterm(
    database_url: str, tmp_path: Path, stopped_at_exit: list[subprocess.Popen[bytes]]
) -> None:
    port = unused_local_port()
    application_name = f"svc-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "DATABASE_URL": database_url, "SESSIONDB_POOL_APPLICATION_NAME": application_name}
    log = tmp_path / "server.log"
    process = start_example(port, env, log)
    stopped_at_exit.append(process)
    base_url = f"http://127.0.0.1:{port}"

    wait_until_healthy(process, base_url, log)
    exercise(base_url)
    exit_code = open_stream_then_stop(base_url, process, signal.SIGTERM)

    output = log.read_text()
    assert exit_code == 0, output
    assert "Application shutdown complete" in output  # the lifespan ran, disposing the pool
    assert port_is_closed(port)
    assert processes_mentioning(f"examples.service --port {port} ") == []
    # The disposed pool's connections are gone (the server notices closed ones asynchronously, so poll).
    assert backends_gone(database_url, application_name)


def backends_gone(database_url: str, application_name: str) -> bool:
    for _ in range(600):
        with psycopg.connect(database_url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (application_name,)
            ).fetchone()
        if row is not None and row[0] == 0:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_the_documented_command_runs_on_an_embedded_server_and_cleans_up_on_ctrl_c(
    tmp_path: Path, stopped_at_exit: list[subprocess.Popen[bytes]]
) -> None:
    # A short private TMPDIR (Unix socket paths are limited to ~100 bytes) lets us check the embedded
    # server's data directory is removed and none of its processes outlive the example.
    tmpdir = Path(tempfile.mkdtemp(prefix="svc-"))
    tmpdir.chmod(0o755)  # as root the server runs as an unprivileged user, who must reach its data dir
    try:
        port = unused_local_port()
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env["TMPDIR"] = str(tmpdir)
        log = tmp_path / "server.log"
        process = start_example(port, env, log)
        stopped_at_exit.append(process)
        base_url = f"http://127.0.0.1:{port}"

        wait_until_healthy(process, base_url, log)
        assert any(p.name.startswith("sessiondb-pg-") for p in tmpdir.iterdir()), "expected its data dir in TMPDIR"
        exercise(base_url)
        exit_code = open_stream_then_stop(base_url, process, signal.SIGINT)

        output = log.read_text()
        assert exit_code == 0, output
        assert "migrations applied: ['0001_create_sessions'" in output
        assert "Application shutdown complete" in output
        assert port_is_closed(port)
        assert processes_mentioning(f"examples.service --port {port} ") == []
        assert processes_mentioning(str(tmpdir)) == []  # no postgres left behind
        # Its data directory is gone (the start-lock directory beside it stays, as it does in /tmp).
        assert [p.name for p in tmpdir.iterdir() if p.name.startswith("sessiondb-pg-")] == []
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


def test_a_bad_database_url_is_one_line_not_a_uvicorn_traceback() -> None:
    environment = {**os.environ, "DATABASE_URL": "mysql://app:s3cret@db/app"}
    run = subprocess.run(
        [sys.executable, "-m", "examples.service", "--port", str(unused_local_port())],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "examples.service: error: DATABASE_URL: unsupported database URL scheme 'mysql'; "
        "use one of: postgresql://, postgres://, postgresql+asyncpg://, postgresql+psycopg://"
    ]
