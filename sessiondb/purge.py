"""Retention: delete sessions older than a cutoff in bounded batches, each its own short transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sessiondb.values import require_utc

DEFAULT_BATCH_SIZE = 5000
MAX_BATCH_SIZE = 100_000
# A retention window longer than this is a typo (30000d for 30d), and a far larger one would put the
# cutoff before the earliest timestamp PostgreSQL and Python can hold.
MAX_AGE = timedelta(days=36_525)  # 100 years

# ORDER BY created_at + LIMIT walks ix_sessions_created_at (migration 0003) from the oldest end; SKIP LOCKED
# steps over rows another transaction holds instead of queueing behind it.
_DELETE_BATCH = text(
    """
    DELETE FROM sessions
    WHERE id IN (
        SELECT id FROM sessions
        WHERE created_at < :cutoff
        ORDER BY created_at
        LIMIT :batch_size
        FOR UPDATE SKIP LOCKED
    )
    """
)
_COUNT_OLDER = text("SELECT count(*) FROM sessions WHERE created_at < :cutoff")


def check_batch_size(batch_size: object) -> int:
    """``batch_size`` if it is an int in 1..MAX_BATCH_SIZE, else ``TypeError``/``ValueError``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {type(batch_size).__name__}")
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValueError(f"batch_size must be between 1 and {MAX_BATCH_SIZE}, got {batch_size}")
    return batch_size


def check_older_than(older_than: object) -> timedelta | datetime:
    """A positive age up to ``MAX_AGE`` or an aware cutoff datetime, else ``TypeError``/``ValueError``."""
    if isinstance(older_than, datetime):
        return require_utc(older_than, name="older_than")  # a naive cutoff is ambiguous: rejected
    if isinstance(older_than, timedelta):
        if older_than <= timedelta(0):
            raise ValueError(f"older_than must be a positive timedelta, got {older_than!r}")
        if older_than > MAX_AGE:
            raise ValueError(f"older_than must be at most {MAX_AGE.days} days (100 years), got {older_than}")
        return older_than
    raise TypeError(f"older_than must be a timedelta or an aware datetime, got {type(older_than).__name__}")


async def purge_sessions(
    s: AsyncSession,
    older_than: timedelta | datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    *,
    dry_run: bool = False,
    on_batch: Callable[[int], Any] | None = None,
) -> int:
    """Delete sessions created before the cutoff; return how many were deleted.

    ``older_than`` is an age (``timedelta(days=30)``: cutoff = the server's ``now()`` minus it, fixed
    at the start) or an aware ``datetime`` cutoff (naive ones raise ``ValueError``).

    Transactions: **this commits ``s`` after every batch** of at most ``batch_size`` rows, so no lock
    or transaction lasts longer than one batch. Pass a session with nothing of yours pending (e.g. a
    fresh ``db.session()``): anything already in its transaction is committed with the first batch.
    ``dry_run=True`` deletes nothing and returns how many rows would go. ``on_batch(total_so_far)``
    is called after each committed batch (progress reporting).
    """
    if not isinstance(s, AsyncSession):
        raise TypeError(f"expected a sqlalchemy AsyncSession (from db.session()), got {type(s).__name__}")
    if s.new or s.dirty or s.deleted:
        raise ValueError("purge_sessions commits per batch: flush or discard the session's pending changes first")
    cutoff_or_age = check_older_than(older_than)
    size = check_batch_size(batch_size)

    # The cutoff is fixed once, on the server's clock, so rows created while the purge runs never qualify.
    if isinstance(cutoff_or_age, datetime):
        cutoff = cutoff_or_age
    else:
        cutoff = (await s.execute(text("SELECT now() - CAST(:age AS interval)"), {"age": cutoff_or_age})).scalar_one()
    if dry_run:
        would = int((await s.execute(_COUNT_OLDER, {"cutoff": cutoff})).scalar_one())
        await s.commit()
        return would

    total = 0
    await s.commit()  # the cutoff query's transaction ends here; each batch below is its own
    while True:
        result: Any = await s.execute(_DELETE_BATCH, {"cutoff": cutoff, "batch_size": size})
        deleted = int(result.rowcount)
        await s.commit()
        if deleted == 0:
            return total
        total += deleted
        if on_batch is not None:
            on_batch(total)
