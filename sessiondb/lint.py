"""``sessiondb lint``: run squawk, the PostgreSQL migration linter, over the migration files."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from sessiondb.errors import ConfigurationError
from sessiondb.migrations import default_migrations_dir

CONFIG_NAME = ".squawk.toml"


def squawk_executable() -> str:
    """The ``squawk`` shipped by the ``squawk-cli`` wheel: next to this Python first (an unactivated venv)."""
    beside_python = Path(sys.executable).parent / "squawk"
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("squawk")
    if found is None:
        raise ConfigurationError("squawk is not installed: pip install 'sessiondb[dba]' (it brings squawk-cli)")
    return found


def find_config(migrations_dir: Path) -> Path:
    """The checked-in ``.squawk.toml`` beside the migrations folder (repository root, or the installed package)."""
    config = migrations_dir.resolve().parent / CONFIG_NAME
    if not config.is_file():
        raise ConfigurationError(f"no squawk configuration at {config}")
    return config


def run_squawk(migrations_dir: Path | None = None) -> int:
    """Lint every ``*.sql`` in the folder with the checked-in config; return squawk's exit code (0 = clean)."""
    directory = (migrations_dir or default_migrations_dir()).resolve()
    if not directory.is_dir():
        raise ConfigurationError(f"migrations folder {directory} does not exist")
    files = sorted(p.name for p in directory.glob("*.sql"))
    if not files:
        raise ConfigurationError(f"no .sql files in {directory}")
    # Run from the folder's parent with `sql/NAME.sql` paths: the config's excluded_paths match those.
    paths = [f"{directory.name}/{name}" for name in files]
    command = [squawk_executable(), "--config", str(find_config(directory)), *paths]
    return subprocess.run(command, cwd=directory.parent, check=False).returncode
