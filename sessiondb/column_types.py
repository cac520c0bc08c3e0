"""Column types that hand Python code plain ``uuid.UUID`` and UTC-aware ``datetime`` values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Dialect, Uuid
from sqlalchemy.types import TypeDecorator

from sessiondb.values import normalize_uuid, parse_session_id, require_utc


class PlainUUID(TypeDecorator[uuid.UUID]):
    """``uuid`` column that always yields ``uuid.UUID`` itself, never asyncpg's subclass."""

    impl = Uuid(as_uuid=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        return None if value is None else parse_session_id(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        return None if value is None else normalize_uuid(value)


class UTCDateTime(TypeDecorator[datetime]):
    """``timestamptz`` column: rejects naive datetimes on the way in, yields UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else require_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the driver, got {type(value).__name__}")
        if value.tzinfo is None:  # only if a driver ever returns naive values: they are UTC on the wire
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
