"""PoolSettings: documented defaults, validation and the environment."""

from __future__ import annotations

import dataclasses

import pytest

from sessiondb import ConfigurationError, PoolSettings


def test_defaults_suit_a_web_backend() -> None:
    s = PoolSettings()
    assert (s.size, s.max_overflow, s.timeout) == (10, 5, 10.0)
    assert s.pre_ping is True
    assert s.pgbouncer is False
    assert s.max_connections == 15


def test_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PoolSettings().size = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 0},
        {"size": -1},
        {"size": 2.5},
        {"size": True},
        {"max_overflow": -1},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": float("nan")},
        {"timeout": float("inf")},
        {"recycle": 0},
        {"command_timeout": 0},
        {"connect_timeout": 0},
        {"statement_cache_size": -5},
        {"pre_ping": "yes"},
        {"application_name": "x" * 64},
        {"application_name": "bad\nname"},
    ],
)
def test_nonsense_values_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        PoolSettings(**kwargs)  # type: ignore[arg-type]


def test_optional_limits_accept_none() -> None:
    s = PoolSettings(recycle=None, command_timeout=None)
    assert s.recycle is None and s.command_timeout is None


def test_from_env_reads_each_field() -> None:
    env = {
        "SESSIONDB_POOL_SIZE": "20",
        "SESSIONDB_POOL_MAX_OVERFLOW": "0",
        "SESSIONDB_POOL_TIMEOUT": "2.5",
        "SESSIONDB_POOL_RECYCLE": "none",
        "SESSIONDB_POOL_PRE_PING": "false",
        "SESSIONDB_POOL_STATEMENT_CACHE_SIZE": "0",
        "SESSIONDB_POOL_COMMAND_TIMEOUT": "None",
        "SESSIONDB_POOL_APPLICATION_NAME": "billing",
        "SESSIONDB_PGBOUNCER": "1",
    }
    s = PoolSettings.from_env(env)
    assert s == PoolSettings(
        size=20,
        max_overflow=0,
        timeout=2.5,
        recycle=None,
        pre_ping=False,
        statement_cache_size=0,
        command_timeout=None,
        application_name="billing",
        pgbouncer=True,
    )


def test_from_env_overrides_win() -> None:
    assert PoolSettings.from_env({"SESSIONDB_POOL_SIZE": "20"}, size=3).size == 3


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SESSIONDB_POOL_SIZE", "ten"), ("SESSIONDB_POOL_PRE_PING", "maybe"), ("SESSIONDB_POOL_SIZE", "-3")],
)
def test_from_env_rejects_bad_values_naming_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigurationError) as raised:
        PoolSettings.from_env({variable: value})
    assert variable in str(raised.value) or "size" in str(raised.value)


def test_from_env_rejects_a_misspelt_variable_instead_of_ignoring_it() -> None:
    with pytest.raises(ConfigurationError) as raised:
        PoolSettings.from_env({"SESSIONDB_POOL_SIZ": "3"})
    assert "unknown pool setting SESSIONDB_POOL_SIZ (did you mean SESSIONDB_POOL_SIZE?)" in str(raised.value)
