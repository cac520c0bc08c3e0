"""Small test utilities shared by several modules."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from sqlalchemy import event

from sessiondb import Database
from sessiondb.urls import asyncpg_dsn


class StatementLog:
    """Records every SQL statement a Database's pool sends, to prove when none was sent.

    Both what SQLAlchemy executes and what sessiondb sends straight to the asyncpg connection
    (the session functions, db.fast): asyncpg's query logger sees the latter, on every connection
    checked out while the log is listening.
    """

    def __init__(self, db: Database) -> None:
        self.statements: list[str] = []
        self._engine = db.engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._record)
        event.listen(self._engine.pool, "checkout", self._log_driver_queries)

    async def sent(self) -> list[str]:
        """The statements so far. asyncpg calls its query loggers via ``call_soon``: let them run first."""
        await asyncio.sleep(0)
        return self.statements

    def remove(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)
        event.remove(self._engine.pool, "checkout", self._log_driver_queries)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)

    def _log_driver_queries(self, dbapi_connection: Any, *args: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(self._record_driver)  # a set: adding twice is a no-op

    def _record_driver(self, query: Any) -> None:
        self.statements.append(query.query)


async def fetchval(database_url: str, query: str, *args: Any) -> Any:
    """Run one query on a separate, plain asyncpg connection (outside the pool under test)."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()


async def fetch(database_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Like ``fetchval``, all rows."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()
