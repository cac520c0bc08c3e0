"""Validation of the two kinds of value callers hand us: session ids and datetimes."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

from sessiondb.errors import InvalidSessionId, NaiveDatetimeError, NotADatetimeError

_CANONICAL_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _preview(value: object) -> str:
    # Bound what we echo back: ids may be attacker-controlled and arbitrarily long.
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def normalize_uuid(value: uuid.UUID) -> uuid.UUID:
    """A plain ``uuid.UUID`` (asyncpg hands back its own subclass)."""
    return value if type(value) is uuid.UUID else uuid.UUID(int=value.int)


def parse_session_id(value: object) -> uuid.UUID:
    """Return ``value`` as a plain ``uuid.UUID`` or raise ``InvalidSessionId``.

    Accepts a ``uuid.UUID`` or a string in the canonical 8-4-4-4-12 hex form, any case. Braces,
    ``urn:uuid:`` prefixes, missing hyphens and surrounding whitespace are rejected: ids travel in
    URLs and logs, and one spelling per id keeps them comparable.
    """
    if isinstance(value, uuid.UUID):
        return normalize_uuid(value)
    if isinstance(value, str):
        if len(value) == 36 and _CANONICAL_UUID.fullmatch(value):
            return uuid.UUID(value)
        raise InvalidSessionId(
            f"invalid session id {_preview(value)}: expected a UUID like 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'"
        )
    raise InvalidSessionId(
        f"invalid session id {_preview(value)}: expected uuid.UUID or str, got {type(value).__name__}"
    )


def require_utc(value: object, *, name: str = "datetime") -> datetime:
    """Return an aware ``datetime`` converted to UTC; reject naive ones.

    A naive datetime bound to ``timestamptz`` is read in the server's TimeZone and silently shifted,
    so it is an error here rather than a guess.
    """
    if not isinstance(value, datetime):
        raise NotADatetimeError(f"{name} must be a datetime, got {type(value).__name__}")
    offset = value.utcoffset()
    if value.tzinfo is None or offset is None:
        raise NaiveDatetimeError(
            f"{name} must be timezone-aware (naive datetimes are ambiguous); "
            "use datetime.now(timezone.utc) or attach a tzinfo"
        )
    return value.astimezone(UTC)
