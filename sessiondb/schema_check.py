"""``sessiondb check``: compare the live schema with the package's SQLAlchemy metadata (drift detection).

Compares, per table in ``sessiondb.metadata``: columns (type, nullability, server default), primary key,
indexes (name, columns, uniqueness, validity) and the triggers the migrations install, which the
metadata cannot express and so are listed here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, MetaData, Table, create_engine, inspect, text
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from sessiondb.errors import DatabaseUnavailable
from sessiondb.model import metadata as model_metadata
from sessiondb.urls import describe_server, migration_url

# pg_trigger.tgtype bits (PostgreSQL's TRIGGER_TYPE_*): ROW = 1, BEFORE = 2, UPDATE = 16.
_TRIGGER_BEFORE, _TRIGGER_UPDATE = 2, 16


@dataclass(frozen=True)
class ExpectedTrigger:
    name: str
    function: str
    tgtype: int  # timing/level/events bits
    enabled: str  # pg_trigger.tgenabled: 'A' = ALWAYS (fires even with session_replication_role = replica)
    description: str


# Installed by sql/0002_sessions_immutable.sql.
EXPECTED_TRIGGERS: dict[str, list[ExpectedTrigger]] = {
    "sessions": [
        ExpectedTrigger(
            "sessions_immutable",
            "sessions_reject_update",
            _TRIGGER_BEFORE | _TRIGGER_UPDATE,
            "A",
            "BEFORE UPDATE FOR EACH STATEMENT, ENABLE ALWAYS",
        )
    ]
}


def check_schema(url: str | URL, metadata: MetaData = model_metadata) -> list[str]:
    """Every difference between the live schema at ``url`` and ``metadata``, one sentence each (``[]``: in sync)."""
    engine = create_engine(migration_url(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return compare_schema(conn, metadata)
    except OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error.orig).__name__
        raise DatabaseUnavailable(f"cannot connect to PostgreSQL at {describe_server(url)}: {reason}") from None
    finally:
        engine.dispose()


def compare_schema(conn: Connection, metadata: MetaData) -> list[str]:
    inspector = inspect(conn)
    differences: list[str] = []
    for table in metadata.sorted_tables:
        if not inspector.has_table(table.name, schema=table.schema):
            differences.append(f"table {table.name} is missing")
            continue
        differences += _compare_columns(table, inspector.get_columns(table.name, schema=table.schema), conn.dialect)
        differences += _compare_primary_key(table, inspector.get_pk_constraint(table.name, schema=table.schema))
        differences += _compare_indexes(table, inspector.get_indexes(table.name, schema=table.schema))
        differences += _invalid_indexes(conn, table)
        differences += _compare_triggers(conn, table, EXPECTED_TRIGGERS.get(table.name, []))
    return differences


def _normalize_default(sql: str | None) -> str | None:
    if sql is None:
        return None
    return re.sub(r"\s+", "", sql).lower()


def _model_default(column: Column[Any], dialect: Dialect) -> str | None:
    default = column.server_default
    if default is None:
        return None
    arg = getattr(default, "arg", None)
    if isinstance(arg, str):
        return arg
    return str(arg.compile(dialect=dialect)) if arg is not None else None


def _compare_columns(table: Table, live_columns: list[Any], dialect: Dialect) -> list[str]:
    differences = []
    live = {c["name"]: c for c in live_columns}
    for column in table.columns:
        where = f"{table.name}.{column.name}"
        found = live.pop(column.name, None)
        if found is None:
            differences.append(f"column {where} is missing")
            continue
        want_type = column.type.compile(dialect=dialect)
        have_type = found["type"].compile(dialect=dialect)
        if want_type != have_type:
            differences.append(f"column {where} has type {have_type}, the model says {want_type}")
        if bool(found["nullable"]) != bool(column.nullable):
            have = "nullable" if found["nullable"] else "NOT NULL"
            want = "nullable" if column.nullable else "NOT NULL"
            differences.append(f"column {where} is {have}, the model says {want}")
        want_default, have_default = _model_default(column, dialect), found.get("default")
        if _normalize_default(want_default) != _normalize_default(have_default):
            differences.append(f"column {where} has default {have_default or 'none'}, the model says {want_default}")
    for extra in live:
        differences.append(f"column {table.name}.{extra} exists in the database but not in the model")
    return differences


def _compare_primary_key(table: Table, live_pk: Any) -> list[str]:
    want = [c.name for c in table.primary_key.columns]
    have = list(live_pk.get("constrained_columns") or [])
    if want != have:
        return [f"primary key of {table.name} is ({', '.join(have) or 'none'}), the model says ({', '.join(want)})"]
    return []


def _compare_indexes(table: Table, live_indexes: list[Any]) -> list[str]:
    differences = []
    live = {ix["name"]: ix for ix in live_indexes}
    for index in table.indexes:
        name = str(index.name)
        want_cols = [c.name for c in index.columns]
        found = live.pop(name, None)
        if found is None:
            differences.append(f"index {name} on {table.name} ({', '.join(want_cols)}) is missing")
            continue
        have_cols = list(found["column_names"])
        if have_cols != want_cols:
            differences.append(f"index {name} covers ({', '.join(have_cols)}), the model says ({', '.join(want_cols)})")
        if bool(found["unique"]) != bool(index.unique):
            differences.append(f"index {name} unique={bool(found['unique'])}, the model says unique={index.unique}")
    for extra in live:
        differences.append(f"index {extra} on {table.name} exists in the database but not in the model")
    return differences


def _invalid_indexes(conn: Connection, table: Table) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE i.indrelid = to_regclass(:table) AND NOT i.indisvalid ORDER BY 1"
        ),
        {"table": table.fullname},
    ).all()
    return [
        f"index {name} on {table.name} is INVALID (a failed CREATE INDEX CONCURRENTLY): re-run the migration "
        "that creates it, which drops and rebuilds it"
        for (name,) in rows
    ]


def _compare_triggers(conn: Connection, table: Table, expected: list[ExpectedTrigger]) -> list[str]:
    rows = conn.execute(
        text(
            "SELECT t.tgname, t.tgtype, t.tgenabled, p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE t.tgrelid = to_regclass(:table) AND NOT t.tgisinternal"
        ),
        {"table": table.fullname},
    ).all()
    live = {name: (int(tgtype), str(enabled), str(function)) for name, tgtype, enabled, function in rows}
    differences = []
    for trigger in expected:
        found = live.pop(trigger.name, None)
        if found is None:
            differences.append(f"trigger {trigger.name} on {table.name} is missing")
            continue
        tgtype, enabled, function = found
        if tgtype != trigger.tgtype or function != trigger.function:
            differences.append(
                f"trigger {trigger.name} on {table.name} is not {trigger.description} calling {trigger.function}()"
            )
        if enabled != trigger.enabled:
            state = {"D": "disabled", "O": "enabled (origin only)", "R": "enabled (replica only)"}.get(enabled, enabled)
            differences.append(f"trigger {trigger.name} on {table.name} is {state}, expected ENABLE ALWAYS")
    for extra in live:
        differences.append(f"trigger {extra} on {table.name} exists in the database but not in the model")
    return differences
