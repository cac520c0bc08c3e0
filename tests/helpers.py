"""Small test utilities shared by several modules."""

from __future__ import annotations

from typing import Any

import asyncpg
from sqlalchemy import event

from sessiondb import Database
from sessiondb.urls import asyncpg_dsn


class StatementLog:
    """Records every SQL statement a Database's engine sends, to prove when none was sent."""

    def __init__(self, db: Database) -> None:
        self.statements: list[str] = []
        event.listen(db.engine.sync_engine, "before_cursor_execute", self._record)

    def _record(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.statements.append(statement)


async def fetchval(database_url: str, query: str, *args: Any) -> Any:
    """Run one query on a separate, plain asyncpg connection (outside the pool under test)."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        return await conn.fetchval(query, *args)
    finally:
        await conn.close()
