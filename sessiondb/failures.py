"""Turn driver and SQLAlchemy failures inside a ``db.session()`` block into sessiondb's typed errors.

Only failures whose meaning is certain are translated; anything else (a constraint violation, a
programming error) reaches the caller unchanged.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg
from sqlalchemy import exc as sa_exc

from sessiondb.errors import ConnectionLost, QueryTimeout, SessionDBError

# SQLSTATE 57014 query_canceled: statement_timeout, or pg_cancel_backend().
_QUERY_CANCELED = "57014"


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _driver_error(error: sa_exc.DBAPIError) -> BaseException:
    # SQLAlchemy 2.1 wraps the asyncpg exception (``driver_exception``); 2.0 chains it as the cause.
    orig = error.orig
    driver = getattr(orig, "driver_exception", None) or getattr(orig, "__cause__", None) or orig
    return driver if isinstance(driver, BaseException) else error


def _raised_inside_asyncpg(error: BaseException) -> bool:
    traceback = error.__traceback__
    while traceback is not None:
        frame = traceback.tb_frame
        if (
            str(frame.f_globals.get("__name__", "")).startswith("asyncpg")
            or "asyncpg" in Path(frame.f_code.co_filename).parts
        ):
            return True
        traceback = traceback.tb_next
    return False


def translate_failure(error: BaseException, server: str, *, during_commit: bool) -> BaseException | None:
    """The typed error to raise instead of ``error``, or ``None`` to let ``error`` through."""
    if isinstance(error, SessionDBError):
        return None
    if isinstance(error, sa_exc.StatementError) and not isinstance(error, sa_exc.DBAPIError):
        # Our column types validate bound values (ids, aware datetimes) before the statement is
        # sent; SQLAlchemy wraps what they raise. Hand the caller the validation error itself.
        if isinstance(error.orig, SessionDBError):
            return error.orig  # a user's own type's TypeError or ValueError stays SQLAlchemy's StatementError
        return None
    if isinstance(error, sa_exc.DBAPIError):
        driver = _driver_error(error)
        if error.connection_invalidated:
            outcome = (
                "the connection broke during COMMIT, so whether the transaction committed is unknown"
                if during_commit
                else "the transaction was not committed"
            )
            return ConnectionLost(
                f"lost the connection to PostgreSQL at {server} mid-transaction ({outcome}; "
                f"the connection was discarded): {_first_line(driver)}"
            )
        if isinstance(driver, asyncpg.QueryCanceledError) or getattr(error.orig, "sqlstate", None) == _QUERY_CANCELED:
            return QueryTimeout(
                f"statement cancelled by PostgreSQL at {server} (statement_timeout or pg_cancel_backend); "
                f"the transaction was rolled back: {_first_line(driver)}"
            )
        return None
    if isinstance(error, TimeoutError) and _raised_inside_asyncpg(error):
        # asyncpg raises a bare TimeoutError when PoolSettings.command_timeout expires; SQLAlchemy
        # then discards the connection because the statement's state on it is unknown. A
        # TimeoutError from the caller's own asyncio.timeout() is theirs and passes through.
        return QueryTimeout(
            f"statement to PostgreSQL at {server} exceeded PoolSettings.command_timeout; the transaction "
            "was rolled back and the connection discarded"
        )
    return None
