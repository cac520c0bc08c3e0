"""The FastAPI example (examples/service) over HTTP, through httpx's ASGI transport, on a real database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI, HTTPException
from sqlalchemy import event, text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from examples.service.app import DbSession, create_app
from sessiondb import ConfigurationError, Database, PoolSettings, count_sessions, create_session, get_session


@dataclass
class SentResponse:
    """What the probe saw at the moment a response left the app."""

    method: str
    path: str
    status: int
    checked_out_at_start: int
    committed_row_visible: bool | None = None


@dataclass
class ResponseProbe:
    """ASGI wrapper recording, at the instant each response is sent, the pool's occupancy and (for a
    201 from POST /sessions) whether another connection can already read the new row.

    httpx's ASGITransport only returns once the app has finished completely, so checks made after
    ``await client.post(...)`` cannot tell "committed before the response" from "committed just
    after it"; checks made inside ``send`` can.
    """

    app: ASGIApp
    db: Database
    observer: Database
    sent: list[SentResponse] = field(default_factory=list)
    open_streams: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        current: list[SentResponse] = []
        streaming = False

        async def probed_send(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start":
                current.append(SentResponse(scope["method"], scope["path"], message["status"], self._checked_out()))
                self.sent.append(current[0])
            elif message["type"] == "http.response.body":
                more = message.get("more_body", False)
                if more and not streaming:
                    streaming = True
                    self.open_streams += 1
                if not more and current and current[0].status == 201 and scope["path"] == "/sessions":
                    current[0].committed_row_visible = await self._visible(json.loads(message["body"])["id"])
            await send(message)

        try:
            await self.app(scope, receive, probed_send)
        finally:
            if streaming:
                self.open_streams -= 1

    def _checked_out(self) -> int:
        return int(self.db.pool_stats()["checked_out"])

    async def _visible(self, session_id: str) -> bool:
        async with self.observer.session() as s:
            return await get_session(s, session_id) is not None


@asynccontextmanager
async def serving(app: FastAPI, db: Database, observer: Database) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """``app`` with its lifespan running, behind a ResponseProbe, and an httpx client on it."""
    async with LifespanManager(app) as manager:
        probe = ResponseProbe(manager.app, db, observer)
        # raise_app_exceptions=False: a handler's exception becomes the 500 a real server would send.
        transport = httpx.ASGITransport(app=probe, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
            yield client, probe


@pytest.fixture
async def observer(database_url: str) -> AsyncIterator[Database]:
    """A second pool on the same database: "another connection" for visibility checks."""
    other = Database(database_url, PoolSettings(size=1, max_overflow=0, timeout=60))
    try:
        yield other
    finally:
        await other.dispose()


def add_failing_routes(app: FastAPI) -> None:
    """Handlers that write and then fail, as real handlers do when a later step goes wrong."""

    @app.post("/test/write-then-crash")
    async def write_then_crash(s: DbSession) -> None:
        await create_session(s)
        raise RuntimeError("boom after the insert")

    @app.post("/test/write-then-refuse")
    async def write_then_refuse(s: DbSession) -> None:
        await create_session(s)
        raise HTTPException(status_code=409, detail="refused after the insert")


@pytest.fixture
async def service(db: Database, observer: Database) -> AsyncIterator[tuple[httpx.AsyncClient, ResponseProbe]]:
    """The example app on this test's database (pool size 2, no overflow)."""
    app = create_app(db)
    add_failing_routes(app)
    async with serving(app, db, observer) as (client, probe):
        yield client, probe


async def row_count(observer: Database) -> int:
    async with observer.session() as s:
        return await count_sessions(s)


async def test_post_creates_a_session_and_returns_its_to_dict(service: Any, observer: Database) -> None:
    client, _ = service
    response = await client.post("/sessions")
    assert response.status_code == 201
    body = response.json()
    async with observer.session() as s:
        stored = await get_session(s, body["id"])
    assert stored is not None
    assert body == stored.to_dict()
    assert body["created_at"].endswith("+00:00")


async def test_a_201_is_sent_only_after_the_row_is_committed(service: Any) -> None:
    client, probe = service
    for _ in range(3):
        assert (await client.post("/sessions")).status_code == 201
    created = [r for r in probe.sent if r.status == 201]
    assert len(created) == 3
    # Read from another connection at the moment each 201 was sent: the commit had already happened.
    assert all(r.committed_row_visible is True for r in created), created


async def test_get_returns_the_session_or_404(service: Any) -> None:
    client, _ = service
    created = (await client.post("/sessions")).json()

    found = await client.get(f"/sessions/{created['id']}")
    assert found.status_code == 200
    assert found.json() == created

    upper = await client.get(f"/sessions/{created['id'].upper()}")
    assert upper.status_code == 200
    assert upper.json() == created

    missing_id = str(uuid.uuid4())
    missing = await client.get(f"/sessions/{missing_id}")
    assert missing.status_code == 404
    assert missing.json() == {"detail": f"session {missing_id} not found"}


async def test_delete_returns_204_then_404(service: Any, observer: Database) -> None:
    client, _ = service
    created = (await client.post("/sessions")).json()

    deleted = await client.delete(f"/sessions/{created['id']}")
    assert deleted.status_code == 204
    assert deleted.content == b""
    assert await row_count(observer) == 0

    assert (await client.get(f"/sessions/{created['id']}")).status_code == 404
    again = await client.delete(f"/sessions/{created['id']}")
    assert again.status_code == 404
    assert again.json() == {"detail": f"session {created['id']} not found"}


@pytest.mark.parametrize(
    "bad_id",
    [
        "not-a-uuid",
        "12345",
        "0" * 32,  # a UUID without its hyphens
        "{" + "0" * 8 + "-0000-0000-0000-" + "0" * 12 + "}",
        "urn:uuid:" + "0" * 8 + "-0000-0000-0000-" + "0" * 12,
        "x" * 5000,
    ],
)
@pytest.mark.parametrize(("method", "suffix"), [("GET", ""), ("DELETE", ""), ("GET", "/age")])
async def test_invalid_ids_are_422_with_a_clear_message(service: Any, bad_id: str, method: str, suffix: str) -> None:
    client, _ = service
    response = await client.request(method, f"/sessions/{bad_id}{suffix}")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail.startswith("invalid session id ")
    assert "expected a UUID like 'xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx'" in detail
    assert len(detail) < 200  # the bad value is echoed only in part


@pytest.mark.parametrize(("route", "status"), [("/test/write-then-crash", 500), ("/test/write-then-refuse", 409)])
async def test_a_handler_failing_after_a_write_commits_nothing(
    service: Any, db: Database, observer: Database, route: str, status: int
) -> None:
    client, _ = service
    response = await client.post(route)
    assert response.status_code == status
    assert await row_count(observer) == 0
    assert db.pool_stats()["checked_out"] == 0
    # The pool is healthy afterwards: the rolled-back connection serves the next request.
    assert (await client.post("/sessions")).status_code == 201
    assert await row_count(observer) == 1


async def test_connections_are_back_in_the_pool_before_every_response(service: Any, db: Database) -> None:
    client, probe = service
    baseline = db.pool_stats()["checked_out"]
    assert baseline == 0
    created = (await client.post("/sessions")).json()
    sid = created["id"]
    requests = [
        ("GET", f"/sessions/{sid}", 200),
        ("GET", f"/sessions/{uuid.uuid4()}", 404),
        ("GET", "/sessions/not-a-uuid", 422),
        ("GET", f"/sessions/{sid}/age?events=2&interval=0.01", 200),
        ("GET", f"/sessions/{uuid.uuid4()}/age", 404),
        ("GET", "/healthz", 200),
        ("POST", "/test/write-then-crash", 500),
        ("POST", "/test/write-then-refuse", 409),
        ("GET", "/sessions/x?y", 422),
        ("DELETE", f"/sessions/{sid}", 204),
        ("DELETE", f"/sessions/{sid}", 404),
        ("POST", "/sessions", 201),
    ]
    for method, path, status in requests:
        response = await client.request(method, path)
        assert response.status_code == status, (method, path, response.text)
        assert db.pool_stats()["checked_out"] == baseline, (method, path)
    # And already when the response started, not merely once the app had finished.
    assert len(probe.sent) == len(requests) + 1
    assert [r.checked_out_at_start for r in probe.sent] == [baseline] * len(probe.sent), probe.sent


async def test_healthz_reports_ok_with_pool_stats(service: Any) -> None:
    client, _ = service
    response = await client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["pool"]["size"] >= 1
    assert body["pool"]["checkouts"] >= 1
    # Load balancers often probe with HEAD: it was 405.
    head = await client.head("/healthz")
    assert (head.status_code, head.content) == (200, b"")


async def test_stream_interval_below_10_ms_is_422(service: Any) -> None:
    client, _ = service
    created = (await client.post("/sessions")).json()
    # interval=1e-300 was accepted: one client's endless stream would spin the event loop.
    response = await client.get(f"/sessions/{created['id']}/age", params={"interval": "1e-300"})
    assert response.status_code == 422


def _unused_local_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_healthz_is_503_when_the_server_cannot_be_reached(observer: Database) -> None:
    port = _unused_local_port()  # nothing listens there
    unreachable = Database(
        f"postgresql://app:s3cret-pw@127.0.0.1:{port}/app", PoolSettings(size=1, max_overflow=0, connect_timeout=2)
    )
    try:
        async with serving(create_app(unreachable), unreachable, observer) as (client, _):
            response = await client.get("/healthz")
            also_for_writes = await client.post("/sessions")
    finally:
        await unreachable.dispose()
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    detail = response.json()["detail"]
    assert f"127.0.0.1:{port}" in detail
    assert "s3cret-pw" not in response.text
    assert also_for_writes.status_code == 503
    assert unreachable.pool_stats()["checked_out"] == 0


async def test_an_event_stream_sends_the_sessions_age(service: Any) -> None:
    client, _ = service
    created = (await client.post("/sessions")).json()
    response = await client.get(f"/sessions/{created['id']}/age", params={"events": 3, "interval": 0.01})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    assert len(events) == 3
    ages = []
    for block in events:
        kind, data = block.split("\n")
        assert kind == "event: age"
        payload = json.loads(data.removeprefix("data: "))
        assert payload["id"] == created["id"]
        ages.append(payload["age_seconds"])
    assert ages == sorted(ages)
    assert ages[0] >= 0


async def test_ten_open_streams_do_not_starve_a_pool_of_two(
    service: Any, db: Database, pool_settings: PoolSettings
) -> None:
    assert (pool_settings.size, pool_settings.max_overflow) == (2, 0)
    client, probe = service
    sid = (await client.post("/sessions")).json()["id"]

    # Open-ended streams: each ends only when its client goes away (the task is cancelled).
    streams = [asyncio.create_task(client.get(f"/sessions/{sid}/age", params={"interval": 0.2})) for _ in range(10)]
    try:
        async with asyncio.timeout(60):  # a hang guard, not a timing assertion
            while probe.open_streams < 10:
                finished = [t for t in streams if t.done()]
                assert not finished, f"a stream ended instead of staying open: {finished[0].result()}"
                await asyncio.sleep(0.01)
        # Ten streams are sending events and none holds a connection.
        assert db.pool_stats()["checked_out"] == 0

        others = await asyncio.gather(
            *(client.post("/sessions") for _ in range(10)),
            *(client.get(f"/sessions/{sid}") for _ in range(10)),
            client.get("/healthz"),
        )
        assert [r.status_code for r in others] == [201] * 10 + [200] * 11
        assert probe.open_streams == 10
        assert not any(t.done() for t in streams)
    finally:
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    assert probe.open_streams == 0
    assert db.pool_stats()["checked_out"] == 0


async def test_200_concurrent_requests_on_a_pool_of_four_all_succeed(database_url: str, observer: Database) -> None:
    # A generous pool timeout: the 200th waiter queues behind 199 short transactions on a busy CI box.
    db = Database(database_url, PoolSettings(size=4, max_overflow=0, timeout=60))
    peak = 0

    def on_checkout(*_: Any) -> None:
        nonlocal peak
        peak = max(peak, int(db.pool_stats()["checked_out"]))

    event.listen(db.engine.sync_engine.pool, "checkout", on_checkout)
    try:
        async with serving(create_app(db), db, observer) as (client, _):
            sid = (await client.post("/sessions")).json()["id"]
            responses = await asyncio.gather(
                *(client.post("/sessions") if i % 2 else client.get(f"/sessions/{sid}") for i in range(200))
            )
            stats = db.pool_stats()
    finally:
        await db.dispose()
    assert sorted(r.status_code for r in responses) == [200] * 100 + [201] * 100
    assert await row_count(observer) == 101
    assert peak == 4  # the pool was saturated, so the requests really competed for it
    assert stats["connections_opened"] <= 4
    assert stats["checked_out"] == 0


async def test_the_lifespan_builds_the_database_from_the_environment_and_disposes_it(
    database_url: str, observer: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    application_name = f"svc-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("SESSIONDB_POOL_SIZE", "3")
    monkeypatch.setenv("SESSIONDB_POOL_APPLICATION_NAME", application_name)
    app = create_app()

    async def backends() -> int:
        async with observer.session() as s:
            found = await s.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :name"), {"name": application_name}
            )
        return int(found or 0)

    async with LifespanManager(app) as manager:
        db: Database = app.state.db
        assert db.pool_settings.size == 3
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
            assert (await client.post("/sessions")).status_code == 201
        assert await backends() == 1  # the pooled connection stays open while the app runs

    # Shutdown closed it. The server notices a closed connection asynchronously, so poll (bounded).
    for _ in range(600):
        if await backends() == 0:
            break
        await asyncio.sleep(0.05)
    else:
        pytest.fail(f"the app's connection ({application_name}) outlived its shutdown")


async def test_the_app_refuses_to_start_without_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="DATABASE_URL is not set"):
        async with LifespanManager(create_app()):
            pass


def _every_sessiondb_module() -> Iterator[str]:
    import pkgutil

    import sessiondb

    yield "sessiondb"
    for module in pkgutil.walk_packages(sessiondb.__path__, "sessiondb."):
        yield module.name


def test_the_core_package_never_imports_fastapi() -> None:
    modules = list(_every_sessiondb_module())
    assert "sessiondb.database" in modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in {'fastapi', 'starlette', 'uvicorn', 'httpx'})\n"
        "print(','.join(web))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
