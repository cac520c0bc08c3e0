"""The connection a unit of work holds, remembered at checkout.

``create_session`` and friends send their statement straight to the asyncpg connection under the
session. Asking the ``AsyncSession`` for it costs two greenlet hops per statement
(``connection()`` and ``get_raw_connection()``), a large share of a one-statement unit of work.
``db.session()`` already has that connection in hand after checkout, so it remembers it here; a
statement uses it only while the session is still in the very transaction it was remembered for
and the connection is intact, and otherwise asks the session the slow, always-correct way.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import SessionTransaction

_ATTRIBUTE = "_sessiondb_held_connection"


def remember_connection(s: AsyncSession, connection: Connection) -> None:
    """Record that ``s``'s current transaction runs on ``connection``."""
    transaction = s.sync_session.get_transaction()
    if transaction is not None:
        setattr(s, _ATTRIBUTE, (transaction, connection))


def held_connection(s: AsyncSession) -> tuple[Connection, Any] | None:
    """``(connection, pooled DBAPI connection)`` if the remembered one is still ``s``'s, else ``None``.

    Pure attribute checks, no I/O: a commit, rollback or invalidation in between makes it ``None``.
    """
    held: tuple[SessionTransaction, Connection] | None = getattr(s, _ATTRIBUTE, None)
    if held is None:
        return None
    transaction, connection = held
    if (
        s.sync_session.get_transaction() is not transaction
        or not transaction.is_active
        or connection.closed
        or connection.invalidated
    ):
        return None
    return connection, connection.connection
