"""A FastAPI app on sessiondb: create, read and delete sessions, a health check, and an SSE stream.

Run it with ``python -m examples.service`` (see README.md beside this file), or under any ASGI
server with ``uvicorn examples.service.app:create_app --factory``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from sessiondb import (
    Database,
    DatabaseUnavailable,
    InvalidSessionId,
    PoolTimeout,
    Session,
    create_session,
    delete_session,
    get_session,
)


class SessionBody(BaseModel):
    """``Session.to_dict()``: the wire format of one session (declared for the OpenAPI schema)."""

    id: str
    created_at: str


def database(request: Request) -> Database:
    """The app's ``Database``, made by the lifespan."""
    db: Database = request.app.state.db
    return db


async def get_db(request: Request) -> AsyncIterator[AsyncSession]:
    """``Depends(db.get_db)`` for the Database the lifespan creates.

    That Database does not exist yet when the routes are declared, so it is looked up per request;
    the transaction is still ``db.get_db``'s own: commit on success, rollback on any exception
    (``HTTPException`` included), connection always returned to the pool.
    """
    async with asynccontextmanager(database(request).get_db)() as s:
        yield s


# scope="function": the dependency's exit (the COMMIT and the connection's return to the pool) runs
# when the handler returns, BEFORE the response is sent. FastAPI's default for yield dependencies
# ("request") runs it after the response is sent: a client could get 201 for a row that is not yet
# committed (or never is, if the commit fails), and a streaming response would hold the pooled
# connection for as long as the stream stays open.
DbSession = Annotated[AsyncSession, Depends(get_db, scope="function")]


def create_app(db: Database | None = None) -> FastAPI:
    """The app. With no ``db``, the lifespan creates ``Database.from_env()`` (``DATABASE_URL`` plus
    ``SESSIONDB_POOL_*``) at startup and disposes it at shutdown; a ``db`` passed in is the caller's
    to dispose."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = db is None
        app.state.db = Database.from_env() if db is None else db
        try:
            yield
        finally:
            if owned:
                await app.state.db.dispose()

    app = FastAPI(title="sessiondb example service", lifespan=lifespan)
    app.add_exception_handler(InvalidSessionId, _invalid_session_id)
    app.add_exception_handler(DatabaseUnavailable, _database_unreachable)
    app.add_exception_handler(PoolTimeout, _database_unreachable)

    @app.post("/sessions", status_code=status.HTTP_201_CREATED, response_model=SessionBody)
    async def create(s: DbSession) -> dict[str, str]:
        return (await create_session(s)).to_dict()

    @app.get("/sessions/{session_id}", response_model=SessionBody)
    async def read(session_id: str, s: DbSession) -> dict[str, str]:
        return (await _existing(s, session_id)).to_dict()

    @app.delete("/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT)
    async def delete(session_id: str, s: DbSession) -> Response:
        if not await delete_session(s, session_id):
            raise _not_found(session_id)
        return Response(status_code=status.HTTP_204_NO_CONTENT)

    @app.get("/sessions/{session_id}/age")
    async def age_stream(
        session_id: str,
        s: DbSession,
        # At least 10 ms: a near-zero interval would make one client's stream spin the event loop.
        interval: Annotated[float, Query(ge=0.01, le=60, description="seconds between events")] = 1.0,
        events: Annotated[int | None, Query(ge=1, description="stop after this many events")] = None,
    ) -> StreamingResponse:
        """Server-sent events of the session's age. The row is read once, here; the stream itself
        touches no connection, so open streams cost the pool nothing."""
        found = await _existing(s, session_id)
        return StreamingResponse(
            _age_events(found.to_dict()["id"], found.created_at, interval, events),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @app.api_route("/healthz", methods=["GET", "HEAD"])  # load balancers often probe with HEAD
    async def healthz(request: Request, s: DbSession) -> dict[str, object]:
        # Getting here means a connection was checked out (pre-pinged); SELECT 1 proves it answers.
        await s.execute(text("SELECT 1"))
        return {"status": "ok", "pool": database(request).pool_stats()}

    return app


async def _existing(s: AsyncSession, session_id: str) -> Session:
    found = await get_session(s, session_id)  # InvalidSessionId before any SQL: 422 below
    if found is None:
        raise _not_found(session_id)
    return found


def _not_found(session_id: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_404_NOT_FOUND, detail=f"session {session_id} not found")


async def _age_events(session_id: str, created_at: datetime, interval: float, events: int | None) -> AsyncIterator[str]:
    sent = 0
    while events is None or sent < events:
        if sent:
            await asyncio.sleep(interval)
        age = max(0.0, (datetime.now(UTC) - created_at).total_seconds())
        yield f"event: age\ndata: {json.dumps({'id': session_id, 'age_seconds': round(age, 3)})}\n\n"
        sent += 1


async def _invalid_session_id(request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": str(error)})


async def _database_unreachable(request: Request, error: Exception) -> JSONResponse:
    # The message names host and port, never the password (sessiondb guarantees it).
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE, content={"detail": str(error)}, headers={"Retry-After": "1"}
    )
