"""The session operations. Each runs inside the caller's ``AsyncSession`` transaction."""

from __future__ import annotations

import uuid

from sqlalchemy import CursorResult, delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from sessiondb.model import Session
from sessiondb.values import parse_session_id

_INSERT = insert(Session).returning(Session)
_COUNT = select(func.count()).select_from(Session)


def _require_async_session(s: object) -> AsyncSession:
    if not isinstance(s, AsyncSession):
        raise TypeError(f"expected a sqlalchemy AsyncSession (from db.session()), got {type(s).__name__}")
    return s


async def create_session(s: AsyncSession) -> Session:
    """Insert a new session; the database assigns ``id`` and ``created_at``.

    One ``INSERT ... DEFAULT VALUES RETURNING`` round trip; the returned object is already in
    ``s``'s identity map, so ``get_session`` in the same transaction sends no SQL.
    """
    created = (await _require_async_session(s).scalars(_INSERT)).one()
    return created


async def get_session(s: AsyncSession, session_id: uuid.UUID | str) -> Session | None:
    """The session with this id, or ``None``. Raises ``InvalidSessionId`` before any SQL."""
    sid = parse_session_id(session_id)
    return await _require_async_session(s).get(Session, sid)


async def delete_session(s: AsyncSession, session_id: uuid.UUID | str) -> bool:
    """Delete a session; ``True`` if it existed, ``False`` if it did not (deleting twice is fine)."""
    sid = parse_session_id(session_id)
    result = await _require_async_session(s).execute(delete(Session).where(Session.id == sid))
    assert isinstance(result, CursorResult)
    return result.rowcount == 1


async def count_sessions(s: AsyncSession) -> int:
    """How many sessions exist, as seen by this transaction."""
    return int((await _require_async_session(s).scalar(_COUNT)) or 0)
