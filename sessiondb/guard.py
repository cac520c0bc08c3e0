"""One ``AsyncSession`` per task, enforced: concurrent use raises ``ConcurrentSessionUse`` at once.

SQLAlchemy's ``AsyncSession`` is not safe for concurrent use (its identity map, transaction state
and the single connection underneath are shared). Depending on timing, ``asyncio.gather`` on one
session silently serialises, corrupts session state, or fails deep in asyncpg with "another
operation is in progress". This subclass makes every overlap fail the same clear way, before any
SQL is sent for the second caller.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from sessiondb.errors import ConcurrentSessionUse

# Every AsyncSession method that awaits the database. Nested calls from the owning task (scalars()
# calling execute()) are fine; a call from any other task while one is in progress is not.
_IO_METHODS = (
    "close",
    "commit",
    "connection",
    "delete",
    "delete_all",
    "execute",
    "flush",
    "get",
    "get_one",
    "invalidate",
    "merge",
    "merge_all",
    "refresh",
    "reset",
    "rollback",
    "run_sync",
    "scalar",
    "scalars",
    "stream",
    "stream_scalars",
)


class GuardedAsyncSession(AsyncSession):
    """An ``AsyncSession`` that refuses to be used by two tasks at once."""

    _owner: asyncio.Task[Any] | None = None
    _operation: str = ""
    _depth: int = 0
    _idle: asyncio.Event | None = None

    def _claim(self, operation: str) -> None:
        """Mark this task as inside ``operation``; pair with ``_release()`` in a ``finally``.

        A method pair rather than a ``@contextmanager``: this runs on every session call, and the
        generator machinery cost more than the check itself.
        """
        task = asyncio.current_task()
        if self._owner is not None and self._owner is not task:
            raise ConcurrentSessionUse(
                f"this AsyncSession is already running {self._operation}() in task {self._owner.get_name()!r}; "
                f"{operation}() from task {task.get_name() if task else '?'!r} would interleave with it. "
                "A session belongs to one task: open one `async with db.session()` per task "
                "(asyncio.gather over one session is not supported)"
            )
        if self._depth == 0:
            self._owner, self._operation = task, operation
            if self._idle is not None:
                self._idle.clear()
        self._depth += 1

    def _release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner, self._operation = None, ""
            if self._idle is not None:
                self._idle.set()

    def in_use_elsewhere(self) -> bool:
        """Whether another task is inside a call on this session right now."""
        return self._owner is not None and self._owner is not asyncio.current_task()

    async def wait_for_other_tasks(self) -> None:
        """Wait until no other task is inside a call on this session (before cleaning it up)."""
        while self._owner is not None and self._owner is not asyncio.current_task():
            if self._idle is None:
                self._idle = asyncio.Event()
            await self._idle.wait()


def _guarded(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    original = getattr(AsyncSession, name)

    @functools.wraps(original)
    async def method(self: GuardedAsyncSession, *args: Any, **kwargs: Any) -> Any:
        self._claim(name)
        try:
            return await original(self, *args, **kwargs)
        finally:
            self._release()

    return method


for _name in _IO_METHODS:
    if hasattr(AsyncSession, _name):  # delete_all/merge_all are new in SQLAlchemy 2.1
        setattr(GuardedAsyncSession, _name, _guarded(_name))
