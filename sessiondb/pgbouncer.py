"""A throwaway PgBouncer in front of a PostgreSQL server: for tests and local experiments.

Uses the system ``pgbouncer`` binary (Debian package ``pgbouncer``). PgBouncer refuses to run as
root, so as root it runs as an unprivileged user (the embedded server's ``pgserver`` user if there
is one, else ``nobody``), with its config and log in a private temporary directory that user owns.
It listens on 127.0.0.1 on a free port and trusts local clients.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL

from sessiondb.errors import ConfigurationError, EmbeddedServerError
from sessiondb.urls import parse_database_url

PGBOUNCER_PATHS = ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer", "/usr/local/bin/pgbouncer")
_START_TIMEOUT = 15.0


def find_pgbouncer() -> str | None:
    """The path of the ``pgbouncer`` binary, or ``None`` when it is not installed."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    return next((path for path in PGBOUNCER_PATHS if os.access(path, os.X_OK)), None)


@dataclass(frozen=True)
class RunningPgBouncer:
    """A running PgBouncer; ``url_for(dbname)`` is a ``postgresql://`` URL through it."""

    host: str
    port: int
    user: str
    pool_mode: str
    log_path: Path

    def url_for(self, dbname: str) -> str:
        return URL.create(
            "postgresql", username=self.user, host=self.host, port=self.port, database=dbname
        ).render_as_string(hide_password=False)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _quote(value: str) -> str:
    # pgbouncer's connection strings use libpq quoting.
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _unprivileged_user(preferred: str | None) -> str | None:
    if os.geteuid() != 0:
        return None
    for name in (preferred, "pgserver", "nobody"):
        if name:
            with contextlib.suppress(KeyError):
                pwd.getpwnam(name)
                return name
    raise ConfigurationError("running as root and found no unprivileged user to run pgbouncer as")


@contextlib.contextmanager
def run_pgbouncer(
    server_url: str | URL,
    *,
    pool_mode: str = "transaction",
    default_pool_size: int = 2,
    run_as: str | None = None,
) -> Iterator[RunningPgBouncer]:
    """Start PgBouncer in front of ``server_url`` (any database name is passed through); stop it on exit.

    ``default_pool_size`` is deliberately small so that client transactions share server
    connections, which is what exposes session state (such as prepared statements) leaking
    between them.
    """
    binary = find_pgbouncer()
    if binary is None:
        raise ConfigurationError("pgbouncer is not installed (Debian/Ubuntu: apt-get install pgbouncer)")
    server = parse_database_url(server_url)
    host = server.host or server.query.get("host") or "localhost"
    port = server.port or server.query.get("port") or 5432
    user = server.username or "postgres"
    if not isinstance(host, str) or not isinstance(port, int | str):
        raise ConfigurationError("run_pgbouncer needs a server URL with a single host")
    target = f"host={_quote(host)} port={port} user={_quote(user)}"
    if server.password:
        target += f" password={_quote(server.password)}"

    os_user = _unprivileged_user(run_as)
    workdir = Path(tempfile.mkdtemp(prefix="sessiondb-pgbouncer-"))
    listen_port = _free_port()
    log_path = workdir / "pgbouncer.log"
    (workdir / "userlist.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = {target}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {listen_port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {workdir / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {default_pool_size}\n"
        "max_client_conn = 200\n"
        f"logfile = {log_path}\n"
        f"pidfile = {workdir / 'pgbouncer.pid'}\n"
    )
    if os_user is not None:
        entry = pwd.getpwnam(os_user)
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    process = subprocess.Popen(
        [binary, str(workdir / "pgbouncer.ini")],
        user=os_user,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=workdir,
    )
    try:
        _wait_until_listening(process, listen_port, log_path)
        yield RunningPgBouncer("127.0.0.1", listen_port, user, pool_mode, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
            log = log_path.read_text(errors="replace") if log_path.exists() else ""
            raise EmbeddedServerError(f"pgbouncer exited with code {process.returncode}: {(stderr or log).strip()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise EmbeddedServerError(f"pgbouncer did not start listening on 127.0.0.1:{port} within {_START_TIMEOUT:g}s")
