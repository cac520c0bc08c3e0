"""The ``sessions`` table: ORM model and Core table. Mirrors ``sql/0001_create_sessions.sql``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import MetaData, Table, func, inspect, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sessiondb.column_types import PlainUUID, UTCDateTime
from sessiondb.errors import ImmutableSessionError
from sessiondb.values import parse_session_id, require_utc

_IMMUTABLE_COLUMNS = frozenset({"id", "created_at"})


class Base(DeclarativeBase):
    metadata = MetaData()


class Session(Base):
    """One anonymous session. Rows are inserted and deleted, never updated."""

    __tablename__ = "sessions"
    # Fetch the server-generated id and created_at in the INSERT's RETURNING, not a second query.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's declarative hook

    id: Mapped[uuid.UUID] = mapped_column(PlainUUID, primary_key=True, server_default=text("gen_random_uuid()"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, server_default=func.now(), index=True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _IMMUTABLE_COLUMNS:
            self._refuse_change_once_persisted(name)
            # Validate on assignment so bad values fail here, not at flush time.
            value = parse_session_id(value) if name == "id" else require_utc(value, name="created_at")
        super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        if name in _IMMUTABLE_COLUMNS:
            self._refuse_change_once_persisted(name)  # `del` would set it to None at the next flush
        super().__delattr__(name)

    def _refuse_change_once_persisted(self, name: str) -> None:
        if inspect(self).has_identity:
            raise ImmutableSessionError(
                f"Session.{name} cannot change once the row is loaded or persisted; "
                "sessions are immutable (delete and create a new one instead)"
            )

    def to_dict(self) -> dict[str, str]:
        """``{"id": "<lowercase uuid>", "created_at": "<ISO 8601, +00:00>"}``."""
        if self.id is None or self.created_at is None:
            raise ValueError("Session has no id/created_at yet: flush it (create_session does) first")
        return {"id": str(self.id), "created_at": require_utc(self.created_at).isoformat()}

    def __repr__(self) -> str:
        return f"Session(id={self.id!s}, created_at={self.created_at!r})"


sessions: Table = Session.__table__  # type: ignore[assignment]
metadata = Base.metadata
