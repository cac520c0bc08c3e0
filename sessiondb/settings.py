"""Pool configuration: every knob explicit, validated, and readable from the environment."""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from sessiondb.errors import ConfigurationError

ENV_PREFIX = "SESSIONDB_POOL_"
# Not a pool size knob but a deployment fact, so it has a shorter name of its own.
PGBOUNCER_ENV = "SESSIONDB_PGBOUNCER"
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Connection pool settings for :class:`sessiondb.Database`.

    Defaults suit a web backend with a handful of workers per process:

    - ``size=10``: connections kept open; size it to the concurrency you expect per process.
    - ``max_overflow=5``: extra connections opened under bursts and closed when returned.
    - ``timeout=10.0``: seconds a caller waits for a free connection before ``PoolTimeout``.
    - ``recycle=1800.0``: seconds after which a connection is replaced (beats idle-killing proxies).
      ``None`` never recycles.
    - ``pre_ping=True``: check a connection is alive at checkout, so a restarted server or a killed
      backend costs one reconnect instead of an error reaching the caller.
    - ``statement_cache_size=100``: asyncpg's prepared statement cache per connection
      (set 0 behind PgBouncer in transaction mode).
    - ``command_timeout=30.0``: seconds before a single statement is abandoned client-side.
      ``None`` disables it.
    - ``connect_timeout=10.0``: seconds to establish a new connection.
    - ``application_name="sessiondb"``: shown in ``pg_stat_activity``.
    - ``use_lifo=True``: reuse the most recently returned connection, letting idle ones age out.
    - ``pgbouncer=False``: set True when connecting through PgBouncer in transaction pooling mode
      (also ``SESSIONDB_PGBOUNCER=1``); turns off asyncpg's and SQLAlchemy's prepared statement
      caches (overriding ``statement_cache_size``), which break there (``prepared statement
      "__asyncpg_stmt_N__" does not exist`` / ``already exists``).
    """

    size: int = 10
    max_overflow: int = 5
    timeout: float = 10.0
    recycle: float | None = 1800.0
    pre_ping: bool = True
    statement_cache_size: int = 100
    command_timeout: float | None = 30.0
    connect_timeout: float = 10.0
    application_name: str = "sessiondb"
    use_lifo: bool = True
    pgbouncer: bool = False

    def __post_init__(self) -> None:
        _require_int("size", self.size, minimum=1)
        _require_int("max_overflow", self.max_overflow, minimum=0)
        _require_int("statement_cache_size", self.statement_cache_size, minimum=0)
        _require_positive_seconds("timeout", self.timeout)
        _require_positive_seconds("connect_timeout", self.connect_timeout)
        if self.recycle is not None:
            _require_positive_seconds("recycle", self.recycle)
        if self.command_timeout is not None:
            _require_positive_seconds("command_timeout", self.command_timeout)
        for name in ("pre_ping", "use_lifo", "pgbouncer"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"PoolSettings.{name} must be a bool, got {getattr(self, name)!r}")
        name = self.application_name
        if not isinstance(name, str) or not name.isprintable() or len(name.encode()) > 63:
            raise ConfigurationError("PoolSettings.application_name must be printable text of at most 63 bytes")

    @property
    def max_connections(self) -> int:
        """The most connections this pool will ever hold open at once."""
        return self.size + self.max_overflow

    @property
    def effective_statement_cache_size(self) -> int:
        """asyncpg's ``statement_cache_size`` to use: 0 behind PgBouncer, else ``statement_cache_size``.

        Anything that opens asyncpg connections itself (a raw asyncpg pool) should pass this.
        """
        return 0 if self.pgbouncer else self.statement_cache_size

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> PoolSettings:
        """Build settings from ``SESSIONDB_POOL_<FIELD>`` variables (e.g. ``SESSIONDB_POOL_SIZE=20``).

        Unset variables keep the defaults; ``none`` (any case) sets an optional field to ``None``.
        Keyword ``overrides`` win over the environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        known = set()
        for field in fields(cls):
            variable = PGBOUNCER_ENV if field.name == "pgbouncer" else ENV_PREFIX + field.name.upper()
            known.add(variable)
            raw = env.get(variable)
            if raw is not None:
                values[field.name] = _parse_env_value(variable, raw.strip(), field.default)
        # A misspelt name (SESSIONDB_POOL_SIZ) would otherwise be ignored without a word.
        unknown = sorted(name for name in env if name.startswith(ENV_PREFIX) and name not in known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigurationError(
                f"unknown pool setting {unknown[0]}{hint}; known: {', '.join(sorted(known - {PGBOUNCER_ENV}))}"
            )
        values.update(overrides)
        return cls(**values)


def _parse_env_value(variable: str, raw: str, default: Any) -> Any:
    if raw.lower() == "none" and variable.endswith(("_RECYCLE", "_COMMAND_TIMEOUT")):
        return None
    try:
        if isinstance(default, bool):
            if raw.lower() in _TRUE:
                return True
            if raw.lower() in _FALSE:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except ValueError:
        raise ConfigurationError(f"{variable}={raw!r} is not a valid {type(default).__name__}") from None
    return raw


def _require_int(name: str, value: object, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigurationError(f"PoolSettings.{name} must be an int, got {value!r}")
    if value < minimum:
        raise ConfigurationError(f"PoolSettings.{name} must be >= {minimum}, got {value}")


def _require_positive_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"PoolSettings.{name} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"PoolSettings.{name} must be a positive number of seconds, got {value}")
