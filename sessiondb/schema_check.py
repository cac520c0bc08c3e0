"""``sessiondb check``: compare the live schema with the package's SQLAlchemy metadata (drift detection).

Compares, per table in ``sessiondb.metadata``: columns (type, nullability, server default), primary key,
indexes (name, columns or expressions, uniqueness, access method, predicate, validity) and the triggers the
migrations install (timing, events, level, enabled state and the trigger function's body), which the
metadata cannot express and so are listed here.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, MetaData, Table, create_engine, inspect, text
from sqlalchemy.engine import URL, Connection, Dialect
from sqlalchemy.exc import CompileError, OperationalError
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
    # CREATE OR REPLACE FUNCTION can make the trigger a no-op while the trigger itself stays untouched,
    # so the function is compared too: its language and its body, whitespace collapsed (_collapse_whitespace).
    function_language: str
    function_body: str


# Installed by sql/0002_sessions_immutable.sql (keep function_body in step with the function it creates).
EXPECTED_TRIGGERS: dict[str, list[ExpectedTrigger]] = {
    "sessions": [
        ExpectedTrigger(
            "sessions_immutable",
            "sessions_reject_update",
            _TRIGGER_BEFORE | _TRIGGER_UPDATE,
            "A",
            "BEFORE UPDATE ON sessions FOR EACH STATEMENT EXECUTE FUNCTION sessions_reject_update()",
            "plpgsql",
            "BEGIN RAISE EXCEPTION 'sessions rows are immutable: UPDATE of sessions is not allowed' "
            "USING ERRCODE = 'restrict_violation', "
            "HINT = 'delete the session and create a new one (sessiondb migration 0002)'; END",
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


def _collapse_whitespace(sql: str) -> str:
    return " ".join(sql.split())


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


def _type_sql(reflected_type: Any, dialect: Dialect) -> str:
    try:
        return str(reflected_type.compile(dialect=dialect))
    except CompileError:  # NullType: a type SQLAlchemy does not know (it has warned), e.g. a composite type
        return "unknown to SQLAlchemy"


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
        have_type = _type_sql(found["type"], dialect)
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
        have_cols = _index_keys(found)
        if have_cols != want_cols:
            differences.append(f"index {name} covers ({', '.join(have_cols)}), the model says ({', '.join(want_cols)})")
        if bool(found["unique"]) != bool(index.unique):
            differences.append(f"index {name} unique={bool(found['unique'])}, the model says unique={index.unique}")
        model_options, live_options = index.dialect_options["postgresql"], found.get("dialect_options", {})
        # The reflection names the access method only when it is not PostgreSQL's default, btree.
        want_method = model_options["using"] or "btree"
        have_method = live_options.get("postgresql_using") or "btree"
        if have_method != want_method:
            differences.append(f"index {name} uses {have_method}, the model says {want_method}")
        # A partial index serves only queries whose WHERE implies its predicate: purge's would not use it.
        predicate = live_options.get("postgresql_where")
        if predicate and model_options["where"] is None:
            differences.append(f"index {name} is partial (WHERE {predicate}), the model says it covers every row")
        elif not predicate and model_options["where"] is not None:
            differences.append(f"index {name} covers every row, the model says it is partial")
    for extra in live:
        differences.append(f"index {extra} on {table.name} exists in the database but not in the model")
    return differences


def _index_keys(reflected_index: Any) -> list[str]:
    """Its key columns, an expression's SQL in place of a column name (where ``column_names`` has None)."""
    keys = reflected_index.get("expressions") or reflected_index["column_names"]
    return [str(key) for key in keys]


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
            # tgattr (UPDATE OF columns) and tgqual (WHEN) narrow when a trigger fires, beyond what tgtype says;
            # cardinality(), as an empty int2vector casts to a zero-based array that is never = '{}'.
            "SELECT t.tgname, t.tgtype, t.tgenabled, cardinality(t.tgattr::int2[]) > 0 AS only_some_columns, "
            "t.tgqual IS NOT NULL AS has_condition, pg_get_triggerdef(t.oid) AS definition, "
            "p.proname, p.prosrc, l.lanname "
            "FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_language l ON l.oid = p.prolang "
            "WHERE t.tgrelid = to_regclass(:table) AND NOT t.tgisinternal"
        ),
        {"table": table.fullname},
    ).all()
    live = {row.tgname: row for row in rows}
    differences = []
    for trigger in expected:
        found = live.pop(trigger.name, None)
        if found is None:
            differences.append(f"trigger {trigger.name} on {table.name} is missing")
            continue
        where = f"trigger {trigger.name} on {table.name}"
        if (
            found.tgtype != trigger.tgtype
            or found.proname != trigger.function
            or found.only_some_columns
            or found.has_condition
        ):
            differences.append(f"{where} is defined as {found.definition}, expected {trigger.description}")
        # Another function's body is not compared: the line above already names the wrong function.
        if found.proname == trigger.function and (
            found.lanname != trigger.function_language
            or _collapse_whitespace(found.prosrc) != _collapse_whitespace(trigger.function_body)
        ):
            body = textwrap.shorten(found.prosrc, width=120, placeholder=" ...")
            differences.append(
                f"function {found.proname}() is not the one the migrations install (language {found.lanname}, "
                f"body {body!r}): {where} may let UPDATE through"
            )
        if found.tgenabled != trigger.enabled:
            state = {"D": "disabled", "O": "enabled (origin only)", "R": "enabled (replica only)"}.get(
                found.tgenabled, found.tgenabled
            )
            differences.append(f"{where} is {state}, expected ENABLE ALWAYS")
    for extra in live:
        differences.append(f"trigger {extra} on {table.name} exists in the database but not in the model")
    return differences
